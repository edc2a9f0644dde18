//! How long this member's consumer group has not been steady. While a rebalance lasts, some
//! partitions may be owned by nobody; one that does not end points at a member that is stuck
//! or gone, or a broker that cannot complete it.

use std::time::{Duration, Instant};

/// A rebalance that lasts longer than this is worth a warning (and again every this long).
pub const UNSETTLED_WARNING: Duration = Duration::from_secs(60);

/// Since when the group has not been steady, and when that was last reported.
#[derive(Debug, Default)]
pub struct GroupWatch {
    unsettled_since: Option<Instant>,
    warned_at: Option<Instant>,
}

impl GroupWatch {
    /// Takes one report; returns how long the group has been unsettled, and whether to warn.
    pub fn observe(&mut self, steady: bool, now: Instant) -> (Duration, bool) {
        if steady {
            *self = GroupWatch::default();
            return (Duration::ZERO, false);
        }
        let unsettled = now.saturating_duration_since(*self.unsettled_since.get_or_insert(now));
        let warn = unsettled >= UNSETTLED_WARNING
            && self.warned_at.is_none_or(|at| now.saturating_duration_since(at) >= UNSETTLED_WARNING);
        if warn {
            self.warned_at = Some(now);
        }
        (unsettled, warn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_rebalance_is_reported_once_a_minute_until_the_group_is_steady() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut watch = GroupWatch::default();
        assert_eq!(watch.observe(false, at(0)), (Duration::ZERO, false));
        assert_eq!(watch.observe(false, at(55)), (Duration::from_secs(55), false));
        assert_eq!(watch.observe(false, at(60)), (Duration::from_secs(60), true));
        assert_eq!(watch.observe(false, at(65)), (Duration::from_secs(65), false));
        assert_eq!(watch.observe(false, at(120)), (Duration::from_secs(120), true));
        assert_eq!(watch.observe(true, at(125)), (Duration::ZERO, false));
        // A new rebalance starts its own clock.
        assert_eq!(watch.observe(false, at(130)), (Duration::ZERO, false));
        assert_eq!(watch.observe(false, at(185)), (Duration::from_secs(55), false));
    }
}
