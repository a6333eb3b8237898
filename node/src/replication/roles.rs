//! Role changes (primary / replica / arbiter). The admin HTTP routes
//! (`/internal/v1/admin/{promote,demote,follow}`) and the Kubernetes coordination
//! layer both call these functions:
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

use super::Replication;
use crate::cluster::{Role, RoleError, RoleInfo};
use crate::storage::{Op, Position};

/// The highest term this node has seen: its role term, its journal's last term and
/// any promise it made.
pub fn known_term(state: &Replication) -> u64 {
    let info = state.role.get();
    info.term
        .max(state.store.position().term)
        .max(state.repl.promised_term())
}

/// Replica → writable primary at `term` (see the module doc). `force` is accepted
/// for the admin API's sake; the quorum checks belong to the caller (election).
pub async fn promote(state: &Replication, term: u64, _force: bool) -> Result<RoleInfo, RoleError> {
    if state.role.get().role == Role::Arbiter {
        return Err(RoleError::Arbiter);
    }
    // Stop applying: take the apply gate so no replicated batch lands under the new
    // term, and make the stream task see the role change.
    let _gate = state.repl.apply_gate.lock().await;
    let known = known_term(state);
    let info = state.role.get();
    if info.role == Role::Primary && !info.read_only && info.term == term {
        return Ok(info); // idempotent
    }
    // A promise of `t` (election) fences primaries *below* `t`: the candidate it was
    // made to (this node, possibly) may still become primary at `t` itself.
    let seen = info.term.max(state.store.position().term);
    if term <= seen || term < state.repl.promised_term() {
        return Err(RoleError::StaleTerm {
            requested: term,
            known,
        });
    }
    state.repl.promise(term);
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
    state.repl.forget_peers();
    state.repl.restart_quorum_clocks();
    state.role.update(|i| i.read_only = false);
    tracing::info!(
        term,
        seq = state.store.position().seq,
        "promoted to primary"
    );
    Ok(state.role.get())
}

/// Primary → read-only replica at once; follows `follow` when given.
pub async fn demote(state: &Replication, follow: Option<String>) -> Result<RoleInfo, RoleError> {
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
pub async fn follow(
    state: &Replication,
    url: &str,
    term: Option<u64>,
) -> Result<RoleInfo, RoleError> {
    let url = normalize_url(url)?;
    if url == *state.advertise_url {
        return Err(RoleError::BadAddress(format!("{url} is this node itself")));
    }
    if let Some(t) = term {
        state.repl.promise(t);
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
/// entry of a term below `term` (see the module doc). With `campaign`, the promise
/// lapses if that campaign fails (see `super::promise`); `own_version` is the Lease
/// version this node has observed.
pub async fn position_promise(
    state: &Replication,
    term: u64,
    campaign: Option<&studio_crds::node_api::Campaign>,
    own_version: Option<u64>,
) -> Position {
    match campaign {
        Some(c) => state
            .repl
            .promise_campaign(term, c.lease_version.as_deref(), own_version),
        None => state.repl.promise(term),
    }
    // Wait for a batch being applied (and acknowledged) right now.
    let _gate = state.repl.apply_gate.lock().await;
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
