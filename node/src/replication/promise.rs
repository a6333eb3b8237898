//! The promise a member makes when it reports its position to an election candidate:
//! from then on it applies and acknowledges no entry of a primary below the promised
//! term (like a Raft vote), so the position it reported covers every write it ever
//! acknowledged.
//!
//! A promise belongs to one campaign: it names the Lease version the candidate tries
//! to replace. When this member later observes the Lease at a *newer* version whose
//! term is still below the promised one, that replace can no longer succeed (every
//! Lease write carries a resourceVersion precondition and terms never go down), so
//! the campaign failed and the promise lapses — the real primary's stream is accepted
//! again. When the Lease reaches the promised term, the promise becomes the floor.
//! Promises from candidates that name no campaign (nodes before 0.2), role changes
//! (promote, follow with a term) are permanent: the floor.

/// The promise state of one node.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Promises {
    /// Terms this node adopted for good: it never goes below them.
    floor: u64,
    /// The highest promise made to a campaign still undecided.
    pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pending {
    term: u64,
    /// The promise lapses only at a Lease version newer than this one (None: any).
    after_version: Option<u64>,
}

/// A resourceVersion as a number (etcd's are); None when it is not one.
pub fn version_number(v: Option<&str>) -> Option<u64> {
    v.and_then(|v| v.parse().ok())
}

impl Promises {
    /// The highest term this node promised not to go below.
    pub fn term(&self) -> u64 {
        self.floor.max(self.pending.as_ref().map_or(0, |p| p.term))
    }

    /// A permanent promise.
    pub fn adopt(&mut self, term: u64) {
        self.floor = self.floor.max(term);
        if self.pending.as_ref().is_some_and(|p| p.term <= self.floor) {
            self.pending = None;
        }
    }

    /// A promise to a campaign replacing the Lease at `candidate_version`;
    /// `own_version` is the Lease version this node has observed itself. Returns false
    /// when the candidate's version is not a number (then the promise is permanent).
    pub fn promise_campaign(
        &mut self,
        term: u64,
        candidate_version: Option<&str>,
        own_version: Option<u64>,
    ) -> bool {
        if term <= self.floor {
            return true;
        }
        let candidate = match candidate_version {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.adopt(term);
                    return false;
                }
            },
        };
        // Lapse only past every version either side knew of when promising.
        let after = candidate.max(own_version);
        match &mut self.pending {
            Some(p) if p.term > term => {}
            Some(p) if p.term == term => p.after_version = p.after_version.max(after),
            _ => {
                self.pending = Some(Pending {
                    term,
                    after_version: after,
                })
            }
        }
        true
    }

    /// The Lease was observed at `version` with term `transitions`. Returns the term
    /// of a promise that lapsed, if one did.
    pub fn lease_observed(&mut self, version: Option<u64>, transitions: u64) -> Option<u64> {
        let p = self.pending.as_ref()?;
        if transitions >= p.term {
            // The campaign (or a later one) won: the promised term is now the Lease's.
            let t = p.term;
            self.adopt(t);
            return None;
        }
        let newer = match (version, p.after_version) {
            (Some(v), Some(after)) => v > after,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if newer {
            let t = p.term;
            self.pending = None;
            return Some(t);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_campaign_releases_its_promise() {
        let mut p = Promises::default();
        p.adopt(2);
        assert!(p.promise_campaign(3, Some("100"), Some(90)));
        assert_eq!(p.term(), 3);
        // Our own view is stale (older version): the campaign may still succeed.
        assert_eq!(p.lease_observed(Some(95), 2), None);
        assert_eq!(p.lease_observed(Some(100), 2), None);
        assert_eq!(p.term(), 3);
        // The holder renewed past the candidate's version: its replace must fail.
        assert_eq!(p.lease_observed(Some(101), 2), Some(3));
        assert_eq!(p.term(), 2);
    }

    #[test]
    fn a_won_campaign_makes_its_term_the_floor() {
        let mut p = Promises::default();
        p.promise_campaign(3, Some("100"), None);
        assert_eq!(p.lease_observed(Some(101), 3), None);
        assert_eq!(p.term(), 3);
        // Later observations never lower it.
        assert_eq!(p.lease_observed(Some(102), 2), None);
        assert_eq!(p.term(), 3);
    }

    #[test]
    fn the_newest_version_any_side_knew_bounds_the_lapse() {
        let mut p = Promises::default();
        // The candidate saw an older Lease than this node: lapse only past ours.
        p.promise_campaign(5, Some("10"), Some(20));
        assert_eq!(p.lease_observed(Some(15), 4), None);
        assert_eq!(p.lease_observed(Some(21), 4), Some(5));
        // Two candidates of the same term: the later version counts.
        p.promise_campaign(5, Some("30"), None);
        p.promise_campaign(5, Some("40"), None);
        assert_eq!(p.lease_observed(Some(35), 4), None);
        assert_eq!(p.term(), 5);
        // A higher promise replaces a lower pending one.
        p.promise_campaign(6, Some("41"), None);
        assert_eq!(p.lease_observed(Some(45), 4), Some(6));
        assert_eq!(p.term(), 0);
    }

    #[test]
    fn promises_without_a_campaign_or_with_odd_versions_are_permanent() {
        let mut p = Promises::default();
        p.adopt(4);
        assert_eq!(p.lease_observed(Some(1000), 1), None);
        assert_eq!(p.term(), 4);
        assert!(!p.promise_campaign(7, Some("not-a-number"), None));
        assert_eq!(p.lease_observed(Some(1000), 1), None);
        assert_eq!(p.term(), 7);
        // A candidate that saw no Lease: any Lease of a lower term ends it.
        let mut q = Promises::default();
        q.promise_campaign(1, None, None);
        assert_eq!(q.lease_observed(None, 0), None);
        assert_eq!(q.lease_observed(Some(5), 0), Some(1));
    }
}
