//! The node's role (primary / replica / arbiter) and the in-process API that changes
//! it. The admin HTTP routes (`/internal/v1/admin/{promote,demote,follow}`) and the
//! Kubernetes coordination layer both call these functions:
//!
//! - [`promote`]`(state, term, force)`: replica → writable primary at `term`. Refuses a
//!   term not above every term this node acted in or holds entries of, a term below
//!   one it promised (promising `term` to itself first is fine), and an arbiter.
//!   Stops the replication stream first, then writes a `TermStart` journal entry so the
//!   new term is in the term history (divergence detection relies on it).
//! - [`demote`]`(state, follow)`: primary → read-only replica at once (writes in flight
//!   fail with 503); with `Some(url)` it follows that primary right away.
//! - [`follow`]`(state, url, term)`: (re)point a replica or arbiter at a primary; a
//!   primary is demoted first.
//! - [`position_promise`]`(state, term)`: for elections. Returns this node's durable
//!   journal position and promises to apply / acknowledge no entry of a term below
//!   `term` from now on (like a Raft vote). Any batch being applied when the promise
//!   is made is finished first, so the returned position covers everything this node
//!   has ever acknowledged.
//!
//! All four are cheap, idempotent where it makes sense, and safe to call concurrently.

use tokio::sync::watch;

pub use studio_crds::node_api::NodeRole as Role;

use crate::app::AppState;
use crate::storage::{Op, Position};

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

/// Shared, observable role state (plus the replication layer's shared state).
pub struct RoleState {
    tx: watch::Sender<RoleInfo>,
    /// Replication bookkeeping (peers, acknowledgements, promises).
    pub repl: crate::replication::Shared,
}

impl RoleState {
    pub fn new(info: RoleInfo) -> RoleState {
        let (tx, _) = watch::channel(info);
        RoleState {
            tx,
            repl: crate::replication::Shared::default(),
        }
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

    /// Whether this node may accept client writes locally.
    pub fn writable(&self) -> bool {
        let i = self.tx.borrow();
        i.role == Role::Primary && !i.read_only
    }
}

/// Why a role change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error("term {requested} is not above the highest term this node knows ({known})")]
    StaleTerm { requested: u64, known: u64 },
    #[error("an arbiter never becomes primary")]
    Arbiter,
    #[error("invalid primary address {0:?}")]
    BadAddress(String),
    #[error("storage: {0}")]
    Store(#[from] crate::storage::StoreError),
}

/// The highest term this node has seen: its role term, its journal's last term and
/// any promise it made.
pub fn known_term(state: &AppState) -> u64 {
    let info = state.role.get();
    info.term
        .max(state.store.position().term)
        .max(state.role.repl.promised_term())
}

/// Replica → writable primary at `term` (see the module doc). `force` is accepted
/// for the admin API's sake; the quorum checks belong to the caller (election).
pub async fn promote(state: &AppState, term: u64, _force: bool) -> Result<RoleInfo, RoleError> {
    if state.role.get().role == Role::Arbiter {
        return Err(RoleError::Arbiter);
    }
    // Stop applying: take the apply gate so no replicated batch lands under the new
    // term, and make the stream task see the role change.
    let _gate = state.role.repl.apply_gate.lock().await;
    let known = known_term(state);
    let info = state.role.get();
    if info.role == Role::Primary && !info.read_only && info.term == term {
        return Ok(info); // idempotent
    }
    // A promise of `t` (election) fences primaries *below* `t`: the candidate it was
    // made to (this node, possibly) may still become primary at `t` itself.
    let seen = info.term.max(state.store.position().term);
    if term <= seen || term < state.role.repl.promised_term() {
        return Err(RoleError::StaleTerm {
            requested: term,
            known,
        });
    }
    state.role.repl.promise(term);
    let url = state.advertise_url.to_string();
    // Read-only until the TermStart entry is durable.
    state.role.set(RoleInfo {
        role: Role::Primary,
        term,
        primary: Some(url.clone()),
        read_only: true,
    });
    let node = state.node_id.to_string();
    let written = state
        .store
        .call(move |s| s.write(Op::TermStart { node }, term))
        .await;
    match written {
        Ok(entry) => {
            state.metrics.journal_seq.set(entry.seq as i64);
            state.metrics.journal_term.set(entry.term as i64);
        }
        Err(e) => {
            state.role.update(|i| {
                i.role = Role::Replica;
                i.primary = None;
            });
            return Err(e.into());
        }
    }
    state.role.repl.forget_peers();
    state.role.update(|i| i.read_only = false);
    tracing::info!(
        term,
        seq = state.store.position().seq,
        "promoted to primary"
    );
    Ok(state.role.get())
}

/// Primary → read-only replica at once; follows `follow` when given.
pub async fn demote(state: &AppState, follow: Option<String>) -> Result<RoleInfo, RoleError> {
    let follow = follow.map(|u| normalize_url(&u)).transpose()?;
    let was = state.role.get();
    state.role.update(|i| {
        if i.role != Role::Arbiter {
            i.role = Role::Replica;
        }
        i.read_only = true;
        i.primary = follow.clone();
    });
    if was.role == Role::Primary {
        tracing::warn!(term = was.term, follow = ?follow, "demoted to read-only replica");
    }
    Ok(state.role.get())
}

/// Follow the primary at `url` (demoting first if this node is a primary). A `term`
/// raises the node's known term (entries of older terms are refused from then on).
pub async fn follow(state: &AppState, url: &str, term: Option<u64>) -> Result<RoleInfo, RoleError> {
    let url = normalize_url(url)?;
    if url == *state.advertise_url {
        return Err(RoleError::BadAddress(format!("{url} is this node itself")));
    }
    if let Some(t) = term {
        state.role.repl.promise(t);
    }
    state.role.update(|i| {
        if i.role == Role::Primary {
            i.role = Role::Replica;
        }
        i.read_only = true;
        i.primary = Some(url.clone());
        if let Some(t) = term {
            i.term = i.term.max(t);
        }
    });
    tracing::info!(primary = %url, "following");
    Ok(state.role.get())
}

/// Reports this node's durable position and promises to apply and acknowledge no
/// entry of a term below `term` (see the module doc).
pub async fn position_promise(state: &AppState, term: u64) -> Position {
    state.role.repl.promise(term);
    // Wait for a batch being applied (and acknowledged) right now.
    let _gate = state.role.repl.apply_gate.lock().await;
    state.store.position()
}

fn normalize_url(u: &str) -> Result<String, RoleError> {
    let u = u.trim().trim_end_matches('/');
    if (u.starts_with("http://") || u.starts_with("https://")) && u.len() > "http://".len() {
        Ok(u.to_string())
    } else {
        Err(RoleError::BadAddress(u.to_string()))
    }
}
