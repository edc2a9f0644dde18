//! Exponential backoff with jitter: the one retry schedule of costline (ClickHouse writes,
//! dead letters, rebalance reads, webhook deliveries, reprice chunks). Pure: the caller passes
//! the random number, so the schedule is tested without a clock or a random source.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each spread by ±25 % so that clients that
/// failed together do not retry together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), failures: 0 }
    }

    /// The delay before retry number `failures` (1 = the first retry) without jitter.
    pub fn base_delay(&self, failures: u32) -> Duration {
        let doubled = self.initial.saturating_mul(1u32 << failures.clamp(1, 21).saturating_sub(1));
        doubled.min(self.max)
    }

    /// Counts one more failure and returns the delay to wait before retrying. `unit_random`
    /// is uniform in `[0, 1)` (e.g. `rand::random()`).
    pub fn next_delay(&mut self, unit_random: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(self.base_delay(self.failures), unit_random)
    }

    /// Failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `base` × a factor in `[0.75, 1.25)` drawn from `unit_random`.
pub fn jitter(base: Duration, unit_random: f64) -> Duration {
    base.mul_f64(0.75 + unit_random.clamp(0.0, 1.0) * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_a_quarter_of_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay(0.5).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.failures(), 6);
        assert_eq!(backoff.base_delay(1000), Duration::from_secs(1), "no overflow after many failures");
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(75));
        let high = backoff.next_delay(0.999_999);
        assert!(high > Duration::from_micros(249_999) && high < Duration::from_millis(250), "{high:?}");
        assert_eq!(jitter(Duration::from_secs(4), 7.0), Duration::from_secs(5), "random clamped to 1");
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_millis(10));
        assert_eq!(backoff.next_delay(0.5), Duration::from_secs(2));
        assert_eq!(backoff.next_delay(0.5), Duration::from_secs(2));
    }
}
