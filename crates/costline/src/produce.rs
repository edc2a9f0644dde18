//! `costline produce`: publishes generated traffic (see `loadgen`) keyed by
//! `externalRequestId`, by count, at a rate or as fast as the broker takes it. `--record`
//! writes every published record as a JSON line, so a test can recompute the expected totals
//! on its own. `--pause-ms` publishes one record at a time at random moments from one
//! long-lived producer, as an application sends its calls' events: the latency benchmark's
//! probes, timed from the moment each was handed over.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use costline_kafka::{delivered, ensure_topic, InFlight, Pace, RecordProducer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use costline_loadgen::{RecordKind, TrafficGenerator, TrafficMix};

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// How many records to publish.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Records per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed of the generator; the same seed and start give the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Virtual time of the first record, epoch ms (default: now).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Virtual milliseconds between two records (spreads event times).
    #[arg(long, default_value_t = 10.0)]
    pub spacing_ms: f64,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Do not create the topic (for brokers without the CreateTopics API).
    #[arg(long)]
    pub no_create_topic: bool,
    /// Write every published record as a JSON line to this file, once the broker has it: `key`,
    /// `ts` (the Kafka timestamp), `sent_ms` (wall clock when it was handed to the producer),
    /// `kind`, `payload`, `partition`, `offset`, `acked_ms` (wall clock when the broker confirmed it).
    #[arg(long)]
    pub record: Option<std::path::PathBuf>,
    /// One record at a time: each is confirmed by the broker (and its line written to --record
    /// at once) before a pause drawn uniformly from MIN..MAX milliseconds (seeded by --seed),
    /// then the next. Sent with a 5 ms linger, as an application sends single events.
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_pause_range, conflicts_with = "rate")]
    pub pause_ms: Option<(u64, u64)>,
}

fn parse_pause_range(text: &str) -> Result<(u64, u64), String> {
    let parsed = text.split_once("..").and_then(|(min, max)| Some((min.parse().ok()?, max.parse().ok()?)));
    match parsed {
        Some((min, max)) if min <= max => Ok((min, max)),
        _ => Err(format!("expected MIN..MAX in milliseconds with MIN <= MAX, e.g. 300..2300 (got {text:?})")),
    }
}

/// What was published.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub valid: u64,
    pub duplicates: u64,
    pub invalid: u64,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.valid + self.duplicates + self.invalid
    }
}

pub async fn run(config: &Config, args: &ProduceArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let published = publish(config, args).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "published {} records to {} ({} valid, {} duplicate copies, {} invalid) in {secs:.1} s ({:.0} records/s)",
        published.total(),
        config.kafka.topic,
        published.valid,
        published.duplicates,
        published.invalid,
        published.total() as f64 / secs.max(1e-9)
    );
    Ok(())
}

pub async fn publish(config: &Config, args: &ProduceArgs) -> anyhow::Result<Published> {
    let topic = &config.kafka.topic;
    if !args.no_create_topic {
        ensure_topic(&config.kafka.brokers, topic, args.partitions)
            .await
            .with_context(|| format!("creating topic {topic} on {}", config.kafka.brokers))?;
    }
    let extra = config.kafka.producer_properties();
    let producer = match args.pause_ms {
        Some(_) => RecordProducer::connect(&config.kafka.brokers, &extra),
        None => RecordProducer::connect_bulk(&config.kafka.brokers, &extra),
    }
    .context("creating the producer")?;
    let mut pauses = args.pause_ms.map(|range| (range, ChaCha8Rng::seed_from_u64(args.seed)));
    let start_ms = args.start_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let mut mix = TrafficMix::new(args.seed, start_ms);
    mix.spacing_ms = args.spacing_ms;
    let mut record_file = match &args.record {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut published = Published::default();
    let mut in_flight = InFlight::new(50_000);
    let mut pace = Pace::new(args.rate);
    for record in TrafficGenerator::new(mix).take(args.count as usize) {
        pace.wait_turn().await;
        let sent_ms = record_file.is_some().then(|| chrono::Utc::now().timestamp_millis());
        let delivery = producer
            .enqueue(topic, Some(record.key.as_bytes()), &record.payload, Some(record.timestamp_ms), &[])
            .await
            .context("publishing")?;
        match record.kind {
            RecordKind::Valid => published.valid += 1,
            RecordKind::Duplicate => published.duplicates += 1,
            RecordKind::Invalid => published.invalid += 1,
        }
        let line = record_file.is_some().then(|| {
            let payload = std::str::from_utf8(&record.payload).ok();
            serde_json::json!({"key": record.key, "ts": record.timestamp_ms, "sent_ms": sent_ms, "kind": record.kind.as_str(), "payload": payload})
        });
        if let Some(((min, max), rng)) = pauses.as_mut() {
            confirm(delivery, line, record_file.as_mut()).await?;
            if let Some(file) = record_file.as_mut() {
                file.flush().context("writing the record file")?;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(*min..=*max))).await;
            continue;
        }
        if let Some((delivery, line)) = in_flight.push((delivery, line)) {
            confirm(delivery, line, record_file.as_mut()).await?;
        }
    }
    for (delivery, line) in in_flight.drain() {
        confirm(delivery, line, record_file.as_mut()).await?;
    }
    if let Some(mut file) = record_file {
        file.flush().context("writing the record file")?;
    }
    Ok(published)
}

/// Waits for a record's delivery; writes its line to the record file, with the partition and
/// offset it got.
async fn confirm(
    delivery: costline_kafka::DeliveryFuture,
    line: Option<serde_json::Value>,
    record_file: Option<&mut std::io::BufWriter<std::fs::File>>,
) -> anyhow::Result<()> {
    let delivered = delivered(delivery).await.context("the broker did not take a record")?;
    if let (Some(mut line), Some(file)) = (line, record_file) {
        line["partition"] = delivered.partition.into();
        line["offset"] = delivered.offset.into();
        line["acked_ms"] = chrono::Utc::now().timestamp_millis().into();
        writeln!(file, "{line}").context("writing the record file")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_pause_range;

    #[test]
    fn pause_ranges_read_min_and_max() {
        assert_eq!(parse_pause_range("300..2300"), Ok((300, 2300)));
        assert_eq!(parse_pause_range("0..0"), Ok((0, 0)));
        for bad in ["2300..300", "300", "a..b", "300..", "-1..5"] {
            let err = parse_pause_range(bad).unwrap_err();
            assert!(err.contains("MIN..MAX") && err.contains(bad), "{bad}: {err}");
        }
    }
}
