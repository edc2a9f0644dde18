//! Who evaluates: exactly one worker at a time, the one the consumer group gave partition 0 of
//! the usage topic (the group already elects one owner, so no second election is needed). The
//! alerts only read a `watch` of it; waiting on the watch rather than polling a flag lets a new
//! leader start at once and a follower sleep.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
