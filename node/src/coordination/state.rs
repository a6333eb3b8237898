//! The election's states and transitions: what one round of the election loop does,
//! as a pure function of what the round reads at its start. No I/O here;
//! [`Coordinator::step`](super::Coordinator) reads the inputs, calls [`next`] and
//! performs the actions in order.

/// What a round of the election looks at, read at its start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Inputs {
    /// The Lease watch has listed once (before, nothing is known).
    pub lease_synced: bool,
    /// The holder the Lease names.
    pub holder: Option<String>,
    /// The Lease names this pod.
    pub me_holds: bool,
    /// The Lease naming this pod is the hold of its previous process (dead: proves
    /// nothing, the Lease is free).
    pub stale_self: bool,
    /// This node acts as primary.
    pub acting: bool,
    /// A switchover is in progress.
    pub handing_over: bool,
    /// The process is shutting down (SIGTERM).
    pub shutting_down: bool,
    /// The last acquisition or renewal is younger than 0.9 × the retry period.
    pub renewed_recently: bool,
    /// This node is an arbiter (never primary).
    pub arbiter: bool,
    /// Acting as primary, it has lacked its write quorum (sync) or every replica
    /// (async, when configured) for longer than the bound.
    pub quorum_lost: bool,
    /// It gave up the primary role for lack of a quorum less than a lease duration
    /// ago: it lets the members that can form one elect one of themselves.
    pub backing_off: bool,
}

/// Where the node stands in the election, as a round sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ElectionState {
    /// The Lease has not been listed yet: the round does nothing, not even the label.
    Unsynced,
    /// A switchover is in progress: it steps down and follows by itself; the round
    /// only keeps the Lease renewed meanwhile.
    HandingOver,
    /// Acts as primary and the Lease names this node: keeps it renewed.
    Primary,
    /// Acts as primary but the Lease names another holder (or none): steps down, then
    /// does what a follower does.
    Deposed,
    /// The Lease names this node (not its previous process's hold) but it does not act
    /// as primary yet (handed over by a switchover, or a promotion that failed
    /// half-way), and it is not shutting down: takes over.
    Named,
    /// Does not act as primary: follows the holder, and is a candidate when the Lease
    /// is free (unless an arbiter, shutting down, or named by a live Lease).
    Follower,
}

/// What a round does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Renews the Lease, keeping holder and term.
    Renew,
    /// Stops acting as primary: the Lease names `holder`.
    StepDown { holder: Option<String> },
    /// Renews the Lease that names this node, then promotes.
    TakeOver,
    /// Points replication at the holder (once it serves as primary).
    Follow { holder: String },
    /// Looks whether the Lease may be taken now (judged when the round gets there, as
    /// whether the process is shutting down): campaigns if so, else forgets since when
    /// the Lease looked free.
    Campaign,
    /// Keeps this pod's role label in line with what the node is.
    ReconcileLabel,
    /// Steps down and releases the Lease (no quorum reachable from here).
    Relinquish,
}

pub(super) fn state_of(i: &Inputs) -> ElectionState {
    if !i.lease_synced {
        ElectionState::Unsynced
    } else if i.handing_over {
        ElectionState::HandingOver
    } else if i.acting {
        if i.me_holds {
            ElectionState::Primary
        } else {
            ElectionState::Deposed
        }
    } else if i.me_holds && !i.stale_self && !i.shutting_down {
        ElectionState::Named
    } else {
        ElectionState::Follower
    }
}

/// The transition function: the actions of one round, in order.
pub(super) fn next(i: &Inputs) -> Vec<Action> {
    let mut plan = Vec::new();
    match state_of(i) {
        ElectionState::Unsynced => return plan,
        ElectionState::HandingOver => {
            if i.acting && i.me_holds && !i.renewed_recently {
                plan.push(Action::Renew);
            }
            return plan;
        }
        ElectionState::Primary => {
            if i.quorum_lost {
                plan.push(Action::Relinquish);
            } else if !i.renewed_recently {
                plan.push(Action::Renew);
            }
        }
        ElectionState::Deposed => {
            plan.push(Action::StepDown {
                holder: i.holder.clone(),
            });
            follower(i, &mut plan);
        }
        // Once promoted, a follower's part has nothing to do: the Lease names this
        // node, and not from its previous process.
        ElectionState::Named => plan.push(Action::TakeOver),
        ElectionState::Follower => follower(i, &mut plan),
    }
    plan.push(Action::ReconcileLabel);
    plan
}

/// A node that does not act as primary follows the holder and, unless it may not be
/// primary now, is a candidate.
fn follower(i: &Inputs, plan: &mut Vec<Action>) {
    if let (Some(h), false) = (&i.holder, i.me_holds) {
        plan.push(Action::Follow { holder: h.clone() });
    }
    if !i.arbiter && !i.shutting_down && !i.backing_off && (!i.me_holds || i.stale_self) {
        plan.push(Action::Campaign);
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::ElectionState::*;
    use super::*;

    fn synced() -> Inputs {
        Inputs {
            lease_synced: true,
            ..Inputs::default()
        }
    }

    fn held_by(h: &str) -> Inputs {
        Inputs {
            holder: Some(h.into()),
            ..synced()
        }
    }

    fn mine() -> Inputs {
        Inputs {
            me_holds: true,
            ..held_by("me")
        }
    }

    fn follow(h: &str) -> Action {
        Follow { holder: h.into() }
    }

    #[test]
    fn every_branch_of_a_round() {
        let cases: Vec<(&str, Inputs, ElectionState, Vec<Action>)> = vec![
            (
                "primary without its write quorum for too long: give the Lease up",
                Inputs {
                    acting: true,
                    quorum_lost: true,
                    ..mine()
                },
                Primary,
                vec![Relinquish, ReconcileLabel],
            ),
            (
                "just gave the Lease up for lack of a quorum: follow, do not campaign",
                Inputs {
                    backing_off: true,
                    ..held_by("other")
                },
                Follower,
                vec![follow("other"), ReconcileLabel],
            ),
            (
                "backing off with no holder at all: still no campaign",
                Inputs {
                    backing_off: true,
                    ..synced()
                },
                Follower,
                vec![ReconcileLabel],
            ),
            (
                "the Lease not listed yet: nothing at all, not even the label",
                Inputs {
                    acting: true,
                    me_holds: true,
                    handing_over: true,
                    ..Inputs::default()
                },
                Unsynced,
                vec![],
            ),
            (
                "hand-over as primary, renewal due: renew only",
                Inputs {
                    acting: true,
                    handing_over: true,
                    ..mine()
                },
                HandingOver,
                vec![Renew],
            ),
            (
                "hand-over as primary, renewed recently: nothing",
                Inputs {
                    acting: true,
                    handing_over: true,
                    renewed_recently: true,
                    ..mine()
                },
                HandingOver,
                vec![],
            ),
            (
                "hand-over, the Lease already given away: nothing, no step-down",
                Inputs {
                    acting: true,
                    handing_over: true,
                    ..held_by("target")
                },
                HandingOver,
                vec![],
            ),
            (
                "hand-over seen by a node that no longer acts as primary: nothing",
                Inputs {
                    handing_over: true,
                    ..mine()
                },
                HandingOver,
                vec![],
            ),
            (
                "primary, renewal due",
                Inputs {
                    acting: true,
                    ..mine()
                },
                Primary,
                vec![Renew, ReconcileLabel],
            ),
            (
                "primary, renewed recently",
                Inputs {
                    acting: true,
                    renewed_recently: true,
                    ..mine()
                },
                Primary,
                vec![ReconcileLabel],
            ),
            (
                "primary shutting down keeps renewing (the shutdown hands over)",
                Inputs {
                    acting: true,
                    shutting_down: true,
                    ..mine()
                },
                Primary,
                vec![Renew, ReconcileLabel],
            ),
            (
                "primary, the Lease names another: step down, follow it, campaign",
                Inputs {
                    acting: true,
                    renewed_recently: true,
                    ..held_by("other")
                },
                Deposed,
                vec![
                    StepDown {
                        holder: Some("other".into()),
                    },
                    follow("other"),
                    Campaign,
                    ReconcileLabel,
                ],
            ),
            (
                "primary, the Lease gone: step down, nobody to follow, campaign",
                Inputs {
                    acting: true,
                    ..synced()
                },
                Deposed,
                vec![StepDown { holder: None }, Campaign, ReconcileLabel],
            ),
            (
                "deposed while shutting down: step down and follow, no campaign",
                Inputs {
                    acting: true,
                    shutting_down: true,
                    ..held_by("other")
                },
                Deposed,
                vec![
                    StepDown {
                        holder: Some("other".into()),
                    },
                    follow("other"),
                    ReconcileLabel,
                ],
            ),
            (
                "deposed arbiter-flagged node: step down and follow, no campaign",
                Inputs {
                    acting: true,
                    arbiter: true,
                    ..held_by("other")
                },
                Deposed,
                vec![
                    StepDown {
                        holder: Some("other".into()),
                    },
                    follow("other"),
                    ReconcileLabel,
                ],
            ),
            (
                "handed the Lease (switchover): take over",
                mine(),
                Named,
                vec![TakeOver, ReconcileLabel],
            ),
            (
                "named by the Lease while shutting down: nothing but the label",
                Inputs {
                    shutting_down: true,
                    ..mine()
                },
                Follower,
                vec![ReconcileLabel],
            ),
            (
                "named by the previous process's Lease: no take-over, campaign",
                Inputs {
                    stale_self: true,
                    ..mine()
                },
                Follower,
                vec![Campaign, ReconcileLabel],
            ),
            (
                "previous process's Lease, arbiter: nothing but the label",
                Inputs {
                    stale_self: true,
                    arbiter: true,
                    ..mine()
                },
                Follower,
                vec![ReconcileLabel],
            ),
            (
                "previous process's Lease while shutting down: nothing but the label",
                Inputs {
                    stale_self: true,
                    shutting_down: true,
                    ..mine()
                },
                Follower,
                vec![ReconcileLabel],
            ),
            (
                "replica: follows the holder and campaigns in the same round",
                held_by("other"),
                Follower,
                vec![follow("other"), Campaign, ReconcileLabel],
            ),
            (
                "no Lease yet: nobody to follow, campaign",
                synced(),
                Follower,
                vec![Campaign, ReconcileLabel],
            ),
            (
                "arbiter: follows, never campaigns",
                Inputs {
                    arbiter: true,
                    ..held_by("other")
                },
                Follower,
                vec![follow("other"), ReconcileLabel],
            ),
            (
                "replica shutting down: follows, does not campaign",
                Inputs {
                    shutting_down: true,
                    ..held_by("other")
                },
                Follower,
                vec![follow("other"), ReconcileLabel],
            ),
            (
                "a renewal time of its own does not make a replica renew",
                Inputs {
                    renewed_recently: true,
                    ..held_by("other")
                },
                Follower,
                vec![follow("other"), Campaign, ReconcileLabel],
            ),
        ];
        for (name, inputs, state, plan) in cases {
            assert_eq!(state_of(&inputs), state, "{name}: {inputs:?}");
            assert_eq!(next(&inputs), plan, "{name}: {inputs:?}");
        }
    }
}
