//! `costline baseline-consume`: the raw consume rate of the broker, for benchmarks. A bare
//! consumer in a fresh group reads the topic from the start and only counts records,
//! so the worker's rate can be compared with what the broker delivers on the same machine.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use costline_kafka::RawConsumer;

use crate::config::Config;

#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Stop after this many records.
    #[arg(long)]
    pub count: u64,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

pub async fn run(config: &Config, args: &BaselineArgs) -> anyhow::Result<()> {
    let group = format!("costline-baseline-{}", std::process::id());
    let consumer =
        RawConsumer::connect(&config.kafka.brokers, &config.kafka.topic, &group).context("creating the consumer")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut first: Option<Instant> = None;
    let mut seen = 0u64;
    let mut bytes = 0u64;
    while seen < args.count {
        let payload_bytes = consumer
            .next_payload_len(deadline)
            .await
            .context("timed out before reading every record")?
            .context("consuming")?;
        first.get_or_insert_with(Instant::now);
        bytes += payload_bytes as u64;
        seen += 1;
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!(
        "baseline: consumed {seen} records ({:.1} MB) in {secs:.2} s from the first record: {:.0} records/s",
        bytes as f64 / 1e6,
        seen as f64 / secs.max(1e-9)
    );
    Ok(())
}
