//! Invocations sent to run after another one (`after_invocation_id`: the
//! dispatcher hands a busy function's slot over before it frees). Each
//! waits here until the one it follows ends, then runs, normally on the
//! sandbox that one leaves warm. One that follows nothing running or queued
//! here (it ended already) runs at once.

use std::collections::HashMap;
use std::sync::Mutex;

use stoke_proto::Invocation;

/// The invocations of one attachment running or queued here.
#[derive(Default)]
pub struct Relay {
    /// By invocation id: its epoch, and the invocation queued to follow it.
    known: Mutex<HashMap<String, (u64, Option<Invocation>)>>,
}

impl Relay {
    /// Take `inv` in: returned to run now, or kept (`None`) until the one
    /// it follows ends.
    pub fn arrive(&self, inv: Invocation) -> Option<Invocation> {
        let mut known = self.known.lock().expect("not poisoned");
        let followed = known.get(&inv.after_invocation_id).is_some_and(|(epoch, next)| {
            !inv.after_invocation_id.is_empty() && *epoch == inv.after_epoch && next.is_none()
        });
        known.insert(inv.invocation_id.clone(), (inv.epoch, None));
        if !followed {
            return Some(inv);
        }
        let (_, next) = known.get_mut(&inv.after_invocation_id).expect("present");
        *next = Some(inv);
        None
    }

    /// The invocation `id` (sent with `epoch`) ended: the one queued to
    /// follow it, to run now.
    pub fn ended(&self, id: &str, epoch: u64) -> Option<Invocation> {
        let mut known = self.known.lock().expect("not poisoned");
        match known.get(id) {
            Some((e, _)) if *e == epoch => known.remove(id).and_then(|(_, next)| next),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(id: &str, epoch: u64, after: Option<(&str, u64)>) -> Invocation {
        Invocation {
            invocation_id: id.into(),
            epoch,
            after_invocation_id: after.map_or(String::new(), |a| a.0.into()),
            after_epoch: after.map_or(0, |a| a.1),
            ..Default::default()
        }
    }

    #[test]
    fn a_follower_waits_for_the_one_it_follows_then_can_be_followed() {
        let relay = Relay::default();
        assert!(relay.arrive(inv("a", 1, None)).is_some(), "runs at once");
        assert!(relay.arrive(inv("b", 2, Some(("a", 1)))).is_none(), "queued behind a");
        assert!(relay.arrive(inv("c", 3, Some(("b", 2)))).is_none(), "queued behind b");
        assert_eq!(relay.ended("a", 1).map(|i| i.invocation_id), Some("b".into()));
        assert_eq!(relay.ended("b", 2).map(|i| i.invocation_id), Some("c".into()));
        assert!(relay.ended("c", 3).is_none());
        assert!(relay.known.lock().unwrap().is_empty(), "nothing kept");
    }

    #[test]
    fn a_follower_of_what_is_not_here_runs_at_once() {
        let relay = Relay::default();
        assert!(relay.arrive(inv("b", 2, Some(("a", 1)))).is_some(), "a unknown");
        relay.arrive(inv("a", 5, None));
        assert!(
            relay.arrive(inv("c", 3, Some(("a", 1)))).is_some(),
            "another epoch of a"
        );
        assert!(relay.ended("a", 1).is_none(), "a stale end changes nothing");
        assert!(relay.arrive(inv("d", 4, Some(("a", 5)))).is_none());
        assert!(relay.arrive(inv("e", 6, Some(("a", 5)))).is_some(), "one follower each");
    }
}
