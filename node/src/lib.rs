//! studio-node: the content repository server.
//!
//! Layers, inner to outer (each imports only layers below it):
//! [`storage`] (SQLite store + journal) → [`cluster`] (role, term, write fence, domain
//! errors) → [`replication`] (stream server and client, quorum, catch-up, clone,
//! divergence, role changes, switchover) → [`coordination`] (the only code that talks
//! to Kubernetes; implements the write fence) → [`node`] (the composition: the write
//! path) → [`http`] (every route, thin handlers) → [`server`] (start-up, supervision,
//! shutdown order). [`config`], [`metrics`] and [`tls`] (certificates, rustls
//! configurations) are leaves used by all.

pub mod backup;
pub mod cluster;
pub mod config;
pub mod coordination;
pub mod http;
pub mod metrics;
pub mod node;
pub mod replication;
pub mod server;
pub mod storage;
pub mod tls;

pub use config::Config;
pub use node::Node;
