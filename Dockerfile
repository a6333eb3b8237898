# syntax=docker/dockerfile:1.7
#
# Studio images, built from the workspace in two stages: a Rust builder, then small
# non-root runtime images (distroless, glibc + libgcc only; uid/gid 65532).
#
#   docker build --target studio-node     -t studio-node:0.1.0 .
#   docker build --target studio-operator -t studio-operator:0.1.0 .
#
# The image names matter: the operator's chart runs `studio-operator:<tag>` and a
# StudioCluster's spec.image names a studio-node image.
# (This file is not built on the development machines, which have no container
# engine; it is kept correct by review.)

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# rusqlite (bundled SQLite) and ring compile C: the rust image carries gcc and make.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p studio-node -p studio-operator \
        --bin studio-node --bin studio-operator --bin kubectl-studio \
    && mkdir -p /out \
    && cp target/release/studio-node target/release/studio-operator target/release/kubectl-studio /out/

# The content repository node. Data lives on the PVC the operator mounts at
# /var/lib/studio (pods run with fsGroup 65532 so the volume is writable).
FROM gcr.io/distroless/cc-debian12:nonroot AS studio-node
COPY --from=builder /out/studio-node /usr/local/bin/studio-node
USER 65532:65532
# 8080: content API, probes, metrics; 8081: internal routes (with TLS, see the README).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/studio-node"]
CMD ["--data-dir", "/var/lib/studio", "--listen", "0.0.0.0:8080"]

# The operator (and the kubectl plugin, for `kubectl exec … kubectl-studio status`).
FROM gcr.io/distroless/cc-debian12:nonroot AS studio-operator
COPY --from=builder /out/studio-operator /usr/local/bin/studio-operator
COPY --from=builder /out/kubectl-studio /usr/local/bin/kubectl-studio
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/studio-operator"]
