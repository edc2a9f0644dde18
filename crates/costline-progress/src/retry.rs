//! Waiting before a retry. Every retry of the flush path (inserts, settles, dead letters,
//! take-overs) waits out the shared [`Backoff`] here, and gives up only at shutdown: the
//! records it could not write are not committed, so they are read again on restart.

use costline_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// Retries of a flush start at 100 ms and double up to 5 s.
pub fn flush_backoff() -> Backoff {
    Backoff::new(std::time::Duration::from_millis(100), std::time::Duration::from_secs(5))
}

/// The worker is shutting down while something still fails.
#[derive(Debug, thiserror::Error)]
#[error(
    "shutdown while {stuck}; nothing is lost: the unwritten records are not committed and are read again on restart"
)]
pub struct ShutdownWhileRetrying {
    pub stuck: String,
}

/// Waits out the next step of `backoff`; fails at once on shutdown.
pub async fn wait_before_retry(
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    stuck: &str,
) -> Result<(), ShutdownWhileRetrying> {
    let delay = backoff.next_delay(rand::random());
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(ShutdownWhileRetrying { stuck: stuck.to_string() }),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}
