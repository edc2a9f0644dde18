//! `costline demo`: the whole pipeline in one command. It applies the schema, starts a worker
//! on a fresh demo topic, publishes realistic traffic spread over the last two hours, waits
//! until every record is counted and flushed, then prints what an analyst would look at.
//! Kafka and ClickHouse must be reachable (`scripts/demo.sh` starts them on loopback).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::Telemetry;
use crate::metrics::Metrics;
use crate::produce::ProduceArgs;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Records to publish.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Longest wait for the worker to catch up.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
}

pub async fn run(mut config: Config, args: &DemoArgs) -> anyhow::Result<()> {
    let run_id = chrono::Utc::now().timestamp();
    config.kafka.topic = format!("costline.demo.{run_id}");
    config.kafka.group_id = format!("costline-demo-{run_id}");
    config.kafka.session_timeout_ms = 6_000;
    let target = crate::worker::clickhouse_target(&config);
    println!(
        "costline demo: topic {}, ClickHouse database `{}` at {}",
        config.kafka.topic, target.database, target.url
    );
    let prices = crate::prices::table::load(&config.pricing)?;
    let telemetry = Arc::new(Telemetry { metrics: Arc::new(Metrics::new()?), ready: AtomicBool::new(false) });
    let shutdown = CancellationToken::new();

    let span_ms = 2 * 3600 * 1000;
    let produce = ProduceArgs {
        count: args.events,
        rate: 0.0,
        seed: run_id as u64,
        start_ms: Some(chrono::Utc::now().timestamp_millis() - span_ms),
        spacing_ms: span_ms as f64 / args.events.max(1) as f64,
        partitions: 4,
        no_create_topic: false,
        record: None,
        pause_ms: None,
    };
    // The topic must exist before the worker subscribes.
    costline_kafka::ensure_topic(&config.kafka.brokers, &config.kafka.topic, produce.partitions).await?;
    let worker = {
        let (config, telemetry, shutdown) = (config.clone(), telemetry.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (leadership, _) = tokio::sync::watch::channel(false);
            crate::worker::run(&config, prices, telemetry, leadership, shutdown).await
        })
    };
    let started = Instant::now();
    let published = crate::produce::publish(&config, &produce).await?;
    println!(
        "published {} records ({} valid, {} duplicate copies, {} invalid) in {:.1} s; waiting for the worker…",
        published.total(),
        published.valid,
        published.duplicates,
        published.invalid,
        started.elapsed().as_secs_f64()
    );
    let metrics = telemetry.metrics.clone();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    while !(metrics.records_consumed.get() >= published.total() && metrics.pending_records.get() == 0) {
        if worker.is_finished() || Instant::now() > deadline {
            shutdown.cancel();
            let outcome = worker.await.context("worker task")?;
            outcome?;
            bail!(
                "the worker did not count every record within {} s ({} of {})",
                args.timeout_secs,
                metrics.records_consumed.get(),
                published.total()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shutdown.cancel();
    worker.await.context("worker task")??;
    println!(
        "counted {} attempts, {} duplicates, {} rejected in {:.1} s end to end ({} flushes)",
        metrics.events_counted.get(),
        metrics.events_duplicate.get(),
        published.invalid,
        started.elapsed().as_secs_f64(),
        metrics.flushes.get()
    );
    let client = target.client();
    for report in crate::report::demo_reports() {
        print!("{}", crate::report::render(&client, &report).await?);
    }
    println!("\nQuery it yourself: clickhouse-client --port 19000 -d {}   (tables: usage_minute, usage_hour, usage_day, usage_events, rejected_events)", target.database);
    Ok(())
}
