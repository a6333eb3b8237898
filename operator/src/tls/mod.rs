//! TLS material of the clusters (spec.tls): certificate issuance, pure
//! ([`pki`]); the controller keeps the Secrets (`controller/tls.rs`).

pub mod pki;
