//! One member's step towards its target, as a pure function.

use super::{Assignment, Member};

/// What one heartbeat moves a member to; the data of a `ReconcileMember`
/// command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciliation {
    pub member_epoch: i32,
    /// Partitions pending revocation that the member no longer lists: free.
    pub released: Assignment,
    /// Assigned partitions outside the target: pending revocation now.
    pub revoked: Assignment,
    /// Free partitions of the target: the member's now.
    pub granted: Assignment,
}

impl Reconciliation {
    /// True when it would change nothing for `member`.
    pub fn is_noop(&self, member: &Member) -> bool {
        self.member_epoch == member.member_epoch
            && self.released.is_empty()
            && self.revoked.is_empty()
            && self.granted.is_empty()
    }
}

/// The next step of `member` towards `target` (its part of the target at
/// `target_epoch`):
///
/// 1. While partitions are pending revocation, nothing happens until the
///    member reports owned partitions without any of them; then they are
///    released.
/// 2. keep = assigned ∩ target; revoke = assigned − target. If anything is
///    to be revoked, it becomes pending and the member stays at its epoch
///    with nothing new: it must give those partitions up first.
/// 3. Otherwise the member moves to the target epoch and is granted the
///    partitions of its target that are free (`is_free` false: another
///    member still owns it, so it is withheld until released).
///
/// `reported_owned` is what the heartbeat lists (None: not sent, so no
/// revocation can be confirmed). `is_free` must count the member's own
/// pending partitions as free: once released they are.
pub fn reconcile(
    member: &Member,
    target_epoch: i32,
    target: &Assignment,
    is_free: &dyn Fn(&str, u32) -> bool,
    reported_owned: Option<&Assignment>,
) -> Reconciliation {
    let mut released = Assignment::new();
    if !member.pending_revocation.is_empty() {
        match reported_owned {
            Some(owned) if owned.is_disjoint(&member.pending_revocation) => {
                released = member.pending_revocation.clone();
            }
            _ => {
                return Reconciliation {
                    member_epoch: member.member_epoch,
                    released,
                    revoked: Assignment::new(),
                    granted: Assignment::new(),
                }
            }
        }
    }
    let revoked = member.assigned.difference(target);
    if !revoked.is_empty() {
        return Reconciliation { member_epoch: member.member_epoch, released, revoked, granted: Assignment::new() };
    }
    let granted = target.difference(&member.assigned).filter(|topic, partition| is_free(topic, partition));
    Reconciliation { member_epoch: target_epoch, released, revoked, granted }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::group::MemberState;

    fn set(items: &[(&str, u32)]) -> Assignment {
        items.iter().map(|(t, p)| (*t, *p)).collect()
    }

    fn member(epoch: i32, assigned: Assignment, pending: Assignment) -> Member {
        Member {
            member_id: "m".into(),
            instance_id: None,
            member_epoch: epoch,
            previous_member_epoch: epoch,
            state: if pending.is_empty() { MemberState::Stable } else { MemberState::UnrevokedPartitions },
            subscribed_topics: BTreeSet::from(["a".to_string()]),
            assignor: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 1,
            session_timeout_ms: 1,
            assigned,
            pending_revocation: pending,
        }
    }

    #[test]
    fn a_member_revokes_before_its_epoch_moves() {
        let m = member(3, set(&[("a", 0), ("a", 1)]), Assignment::new());
        let step = reconcile(&m, 4, &set(&[("a", 1), ("a", 2)]), &|_, _| true, None);
        assert_eq!(step.member_epoch, 3, "stays at its epoch while it revokes");
        assert_eq!(step.revoked, set(&[("a", 0)]));
        assert!(step.granted.is_empty(), "nothing new while revoking");
    }

    #[test]
    fn revoked_partitions_are_released_only_when_the_member_stops_listing_them() {
        let m = member(3, set(&[("a", 1)]), set(&[("a", 0)]));
        let target = set(&[("a", 1), ("a", 2)]);
        for reported in [None, Some(set(&[("a", 0), ("a", 1)]))] {
            let step = reconcile(&m, 4, &target, &|_, _| true, reported.as_ref());
            assert!(step.is_noop(&m), "{reported:?}: {step:?}");
        }
        let step = reconcile(&m, 4, &target, &|_, _| true, Some(&set(&[("a", 1)])));
        assert_eq!(step.released, set(&[("a", 0)]));
        assert_eq!(step.member_epoch, 4);
        assert_eq!(step.granted, set(&[("a", 2)]));
    }

    #[test]
    fn partitions_another_member_owns_are_withheld() {
        let m = member(3, set(&[("a", 1)]), Assignment::new());
        let step = reconcile(&m, 4, &set(&[("a", 1), ("a", 2), ("a", 3)]), &|_, p| p != 2, None);
        assert_eq!(step.member_epoch, 4, "moves to the target epoch");
        assert_eq!(step.granted, set(&[("a", 3)]));
    }

    #[test]
    fn a_reconciled_member_is_a_noop() {
        let m = member(4, set(&[("a", 1)]), Assignment::new());
        assert!(reconcile(&m, 4, &set(&[("a", 1)]), &|_, _| true, None).is_noop(&m));
        let behind = member(3, set(&[("a", 1)]), Assignment::new());
        let step = reconcile(&behind, 4, &set(&[("a", 1)]), &|_, _| true, None);
        assert_eq!((step.member_epoch, step.is_noop(&behind)), (4, false), "an epoch bump alone is a step");
    }
}
