//! studio-node: the content repository server.
//!
//! Layers, inner to outer: [`storage`] (SQLite store + journal), [`replication`]
//! (stream, apply, catch-up, clone), [`coordination`] (Kubernetes API), [`http`] (axum).

pub mod app;
pub mod config;
pub mod coordination;
pub mod http;
pub mod metrics;
pub mod replication;
pub mod roles;
pub mod storage;

pub use app::AppState;
pub use config::Config;
pub mod server;
