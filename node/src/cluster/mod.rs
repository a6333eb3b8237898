//! What every layer above storage agrees on: the node's role and term, the write
//! fence, and the domain errors of role changes and writes. No HTTP, no Kubernetes.
//!
//! - [`RoleState`]: the observable role (primary / replica / arbiter), term, known
//!   primary and read-only flag. Replication acts on it; coordination changes it.
//! - [`WriteFence`]: asked before every client write. Coordination implements it
//!   (a primary may write only while its Lease is provably fresh); outside Kubernetes
//!   the fence is always open ([`OpenFence`]).
//! - [`RoleError`], [`WriteError`]: why a role change or a write was refused; the
//!   HTTP layer maps them to status codes.

mod error;
mod role;

pub use error::{RoleError, WriteError};
pub use role::{Role, RoleInfo, RoleState};

/// Decides whether this node may commit a client write right now (fencing).
pub trait WriteFence: Send + Sync {
    fn may_write(&self) -> bool;
}

/// The fence outside Kubernetes mode: the role alone decides.
pub struct OpenFence;

impl WriteFence for OpenFence {
    fn may_write(&self) -> bool {
        true
    }
}
