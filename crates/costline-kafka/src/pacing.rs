//! Publishing at a steady rate with a bounded number of deliveries awaited at once: the one
//! pacing of costline's bulk producers (`costline produce`, `costline replay`). A producer
//! that enqueued without a bound would hold every record of a large file in memory while the
//! broker lags; one that awaited each delivery would send one record per round trip.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Paces sends to `rate` per second from the first one (no pacing at a rate of 0).
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    started: Option<Instant>,
    sent: u64,
}

impl Pace {
    pub fn new(rate: f64) -> Pace {
        Pace { rate, started: None, sent: 0 }
    }

    /// How long the next send must wait, counting it as sent.
    pub fn next_wait(&mut self, now: Instant) -> Duration {
        let started = *self.started.get_or_insert(now);
        let due = if self.rate > 0.0 { Duration::from_secs_f64(self.sent as f64 / self.rate) } else { Duration::ZERO };
        self.sent += 1;
        due.saturating_sub(now.saturating_duration_since(started))
    }

    /// Waits for the next send's turn.
    pub async fn wait_turn(&mut self) {
        let wait = self.next_wait(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Deliveries not yet confirmed, oldest first, at most `max`.
#[derive(Debug)]
pub struct InFlight<T> {
    queue: VecDeque<T>,
    max: usize,
}

impl<T> InFlight<T> {
    pub fn new(max: usize) -> InFlight<T> {
        InFlight { queue: VecDeque::new(), max: max.max(1) }
    }

    /// Adds a delivery; returns the oldest one once more than `max` wait, to be awaited now.
    #[must_use = "the returned delivery must be awaited"]
    pub fn push(&mut self, delivery: T) -> Option<T> {
        self.queue.push_back(delivery);
        if self.queue.len() > self.max {
            self.queue.pop_front()
        } else {
            None
        }
    }

    /// Every delivery still waiting, oldest first.
    pub fn drain(self) -> impl Iterator<Item = T> {
        self.queue.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_spread_sends_over_the_rate_and_never_catch_up_in_bursts_beyond_it() {
        let start = Instant::now();
        let mut pace = Pace::new(100.0);
        assert_eq!(pace.next_wait(start), Duration::ZERO);
        assert_eq!(pace.next_wait(start), Duration::from_millis(10));
        assert_eq!(pace.next_wait(start + Duration::from_millis(5)), Duration::from_millis(15));
        // Late: no wait, but no credit beyond the schedule either.
        assert_eq!(pace.next_wait(start + Duration::from_millis(100)), Duration::ZERO);
        assert_eq!(pace.next_wait(start + Duration::from_millis(100)), Duration::ZERO);
        let mut unpaced = Pace::new(0.0);
        assert!((0..5).all(|_| unpaced.next_wait(start) == Duration::ZERO));
    }

    #[test]
    fn in_flight_hands_back_the_oldest_beyond_its_bound() {
        let mut in_flight = InFlight::new(2);
        assert_eq!(in_flight.push(1), None);
        assert_eq!(in_flight.push(2), None);
        assert_eq!(in_flight.push(3), Some(1));
        assert_eq!(in_flight.push(4), Some(2));
        assert_eq!(in_flight.drain().collect::<Vec<_>>(), [3, 4]);
    }
}
