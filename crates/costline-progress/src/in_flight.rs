//! Which partitions have a flush queued or being written: a revoke waits until none of ours
//! holds the partition, so that its next owner never reads progress one of our inserts is
//! still about to change.

use std::collections::HashMap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Jobs in flight per partition.
pub struct InFlight {
    jobs: watch::Sender<HashMap<i32, usize>>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight { jobs: watch::Sender::new(HashMap::new()) }
    }
}

impl InFlight {
    /// A job holding `partitions` was handed to a lane.
    pub fn add(&self, partitions: impl Iterator<Item = i32>) {
        self.jobs.send_modify(|jobs| {
            for partition in partitions {
                *jobs.entry(partition).or_default() += 1;
            }
        });
    }

    /// A job holding `partitions` is done (written, fenced or given up).
    pub fn remove(&self, partitions: impl Iterator<Item = i32>) {
        self.jobs.send_modify(|jobs| {
            for partition in partitions {
                if let Some(count) = jobs.get_mut(&partition) {
                    *count -= 1;
                    if *count == 0 {
                        jobs.remove(&partition);
                    }
                }
            }
        });
    }

    /// Waits until no job holds `partition`. Returns `false` if shutdown came first.
    pub async fn released(&self, partition: i32, shutdown: &CancellationToken) -> bool {
        let mut jobs = self.jobs.subscribe();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            // The sender lives in `self`, so the wait ends only when the partition is free.
            free = jobs.wait_for(|jobs| !jobs.contains_key(&partition)) => free.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_partition_is_released_when_its_last_job_is_done() {
        let in_flight = Arc::new(InFlight::default());
        let shutdown = CancellationToken::new();
        assert!(in_flight.released(1, &shutdown).await, "nothing in flight");
        in_flight.add([1, 2].into_iter());
        in_flight.add([1].into_iter());
        let waiting = {
            let (in_flight, shutdown) = (in_flight.clone(), shutdown.clone());
            tokio::spawn(async move { in_flight.released(1, &shutdown).await })
        };
        in_flight.remove([1, 2].into_iter());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one job still holds partition 1");
        in_flight.remove([1].into_iter());
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let in_flight = InFlight::default();
        let shutdown = CancellationToken::new();
        in_flight.add([4].into_iter());
        shutdown.cancel();
        assert!(!in_flight.released(4, &shutdown).await);
    }
}
