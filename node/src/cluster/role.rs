//! The node's role, shared and observable.

use tokio::sync::watch;

pub use studio_crds::node_api::NodeRole as Role;

/// What this node is right now.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleInfo {
    pub role: Role,
    /// The election term this node acts in (primary: the term its writes carry).
    pub term: u64,
    /// Base URL of the primary (own URL when primary), if known.
    pub primary: Option<String>,
    /// Refuse local writes even as primary (demoted / fenced).
    pub read_only: bool,
}

/// Shared, observable role state.
pub struct RoleState {
    tx: watch::Sender<RoleInfo>,
}

impl RoleState {
    pub fn new(info: RoleInfo) -> RoleState {
        let (tx, _) = watch::channel(info);
        RoleState { tx }
    }

    pub fn get(&self) -> RoleInfo {
        self.tx.borrow().clone()
    }

    pub fn set(&self, info: RoleInfo) {
        self.tx.send_replace(info);
    }

    pub fn update(&self, f: impl FnOnce(&mut RoleInfo)) {
        self.tx.send_modify(f);
    }

    pub fn subscribe(&self) -> watch::Receiver<RoleInfo> {
        self.tx.subscribe()
    }

    /// Whether the role allows client writes locally (the fence is asked separately).
    pub fn writable(&self) -> bool {
        let i = self.tx.borrow();
        i.role == Role::Primary && !i.read_only
    }
}
