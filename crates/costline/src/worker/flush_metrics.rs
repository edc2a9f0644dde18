//! The writer lanes' reports, as Prometheus metrics and `/readyz`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use costline_progress::{FlushReport, WriteReport};

use crate::http::Telemetry;

pub struct FlushMetrics {
    pub telemetry: Arc<Telemetry>,
}

impl WriteReport for FlushMetrics {
    fn insert_took(&self, elapsed: Duration) {
        self.telemetry.metrics.insert_seconds.observe(elapsed.as_secs_f64());
    }

    fn insert_failed(&self) {
        self.telemetry.metrics.sink_errors.inc();
    }

    fn row_dropped(&self) {
        self.telemetry.metrics.fenced_flushes.inc();
    }

    fn partial_write_found(&self) {
        self.telemetry.metrics.partial_flushes.inc();
    }
}

impl FlushReport for FlushMetrics {
    fn job_done(&self, elapsed: Duration, written: &[(i32, u64)]) {
        let metrics = &self.telemetry.metrics;
        metrics.flushes.inc();
        metrics.flush_seconds.observe(elapsed.as_secs_f64());
        for &(partition, next_offset) in written {
            metrics.partition_next_offset.with_label_values(&[&partition.to_string()]).set(next_offset as i64);
        }
    }

    fn ready(&self, ready: bool) {
        self.telemetry.ready.store(ready, Ordering::SeqCst);
    }
}
