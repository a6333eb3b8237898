# syntax=docker/dockerfile:1.7
#
# Studio images: small non-root runtime images (distroless cc: glibc + libgcc + CA
# certificates; uid/gid 65532). One file, two ways to get the binaries into them:
#
# 1. With Docker (BuildKit), from the sources: the `builder` stage compiles the workspace.
#
#      docker build --target studio-node     -t studio-node:0.1.0 .
#      docker build --target studio-operator -t studio-operator:0.1.0 .
#
#    The context is the repository; .dockerignore keeps target/ and .cache/ out of it.
#
# 2. Without a container engine (`make images`, scripts/build-images.sh, buildah 1.28):
#    from release binaries built on the host. The context is then a directory holding only
#    those three binaries (`<cargo target dir>/image-bin/`), the Dockerfile is passed with
#    -f, and the base is the one scripts/build-images.sh builds from Debian packages:
#
#      buildah bud --layers --build-arg BINARIES=prebuilt \
#        --build-arg BASE=127.0.0.1:5050/studio/base-cc-debian12@sha256:... \
#        --target studio-node -f Dockerfile target/image-bin
#
# How one file serves both: the runtime stages copy from the stage `binaries`, which is
# `FROM ${BINARIES}`. BINARIES=builder (the default) makes it the compile stage;
# BINARIES=prebuilt makes it the stage that copies the binaries from the (small) context.
# BuildKit and buildah both resolve a FROM naming an earlier stage through a build
# argument, and both build only the stages the target needs: the docker path never runs
# `prebuilt` (whose files are not in the repository context), the buildah path never runs
# `builder`.
#
# The image names matter: the operator's chart runs `studio-operator:<tag>` and a
# StudioCluster's spec.image names a studio-node image.

ARG RUST_VERSION=1.95
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=builder

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

# Prebuilt binaries: the build context is a directory with exactly these three files.
FROM scratch AS prebuilt
COPY studio-node studio-operator kubectl-studio /out/

FROM ${BINARIES} AS binaries

# The content repository node. Data lives on the PVC the operator mounts at
# /var/lib/studio (pods run with fsGroup 65532 so the volume is writable).
FROM ${BASE} AS studio-node
COPY --from=binaries /out/studio-node /usr/local/bin/studio-node
USER 65532:65532
# 8080: content API, probes, metrics; 8081: internal routes (with TLS, see the README).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/studio-node"]
CMD ["--data-dir", "/var/lib/studio", "--listen", "0.0.0.0:8080"]

# The operator (and the kubectl plugin, for `kubectl exec … kubectl-studio status`).
FROM ${BASE} AS studio-operator
COPY --from=binaries /out/studio-operator /usr/local/bin/studio-operator
COPY --from=binaries /out/kubectl-studio /usr/local/bin/kubectl-studio
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/studio-operator"]
