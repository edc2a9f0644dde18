//! Who evaluates, and the pace of the loops that do: exactly one worker at a time, the one the
//! consumer group gave partition 0 of the usage topic (the group already elects one owner, so
//! no second election is needed). The alerts only read a `watch` of it; waiting on the watch
//! rather than polling a flag lets a new leader start at once and a follower sleep.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The ticks of a loop that works only while this worker leads, until shutdown.
pub struct LeaderTicks {
    ticker: Interval,
    leadership: watch::Receiver<bool>,
    shutdown: CancellationToken,
}

impl LeaderTicks {
    pub fn new(period: Duration, leadership: watch::Receiver<bool>, shutdown: CancellationToken) -> LeaderTicks {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        LeaderTicks { ticker, leadership, shutdown }
    }

    /// Waits until this worker leads, then for the next tick or for `woken`, whichever comes
    /// first. False at shutdown: the loop ends.
    pub async fn next(&mut self, woken: impl Future<Output = ()>) -> bool {
        if !wait_to_lead(&mut self.leadership, &self.shutdown).await {
            return false;
        }
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => false,
            _ = self.ticker.tick() => true,
            () = woken => true,
        }
    }

    /// `work`'s output, or `None` if shutdown came first (the work is dropped).
    pub async fn unless_shut_down<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            output = work => Some(output),
        }
    }
}

/// Waits until this worker leads. False at shutdown, or when leadership can no longer change
/// (its publisher is gone) and this worker does not lead.
pub async fn wait_to_lead(leadership: &mut watch::Receiver<bool>, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => false,
        led = leadership.wait_for(|&leads| leads) => led.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_leadership_and_stops_at_shutdown() {
        let (publish, mut leadership) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let waiting = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { wait_to_lead(&mut leadership, &shutdown).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        publish.send_replace(true);
        assert!(waiting.await.expect("the wait ends"));

        let mut follower = publish.subscribe();
        publish.send_replace(false);
        shutdown.cancel();
        assert!(!wait_to_lead(&mut follower, &shutdown).await);
    }
}
