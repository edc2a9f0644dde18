//! `costline replay`: backfill from a JSON-lines file (or stdin) into the topic, one usage event
//! per line, keyed by its `externalRequestId`, at an optional rate, with a progress bar on stderr and
//! a validation summary at the end. Lines that fail validation are not published (the summary
//! names their line numbers and reasons) unless `--publish-invalid`, which sends them on to be
//! dead-lettered by the workers.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use costline_core::decode_event;
use costline_kafka::{delivered, InFlight, Pace, RecordProducer};

use crate::config::Config;

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// JSON-lines file to read; `-` or nothing reads stdin.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Records per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Publish lines that fail validation too (they end up in the dead-letter path).
    #[arg(long)]
    pub publish_invalid: bool,
    /// Validate only; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let (reader, total_bytes): (Box<dyn BufRead>, Option<u64>) = match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(std::io::BufReader::new(file)), size)
        }
        _ => (Box::new(std::io::BufReader::new(std::io::stdin())), None),
    };
    let mut bytes_read = 0u64;
    let extra = config.kafka.producer_properties();
    let producer = match args.dry_run {
        true => None,
        false => Some(RecordProducer::connect_bulk(&config.kafka.brokers, &extra).context("creating the producer")?),
    };
    let started = Instant::now();
    let progress_to_terminal = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let (mut lines, mut published) = (0u64, 0u64);
    let mut rejected: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    let mut in_flight = InFlight::new(10_000);
    let mut pace = Pace::new(args.rate);
    for line in reader.lines() {
        let line = line.context("reading input")?;
        bytes_read += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        let key = match decode_event(line.as_bytes()) {
            Ok(event) => Some(event.external_request_id),
            Err(reason) => {
                rejected.entry(reason.code()).or_default().push(lines);
                if !args.publish_invalid {
                    continue;
                }
                None
            }
        };
        if let Some(producer) = &producer {
            pace.wait_turn().await;
            let delivery = producer
                .enqueue(&config.kafka.topic, key.as_deref().map(str::as_bytes), line.as_bytes(), None, &[])
                .await
                .context("publishing")?;
            if let Some(delivery) = in_flight.push(delivery) {
                delivered(delivery).await.context("the broker did not take a record")?;
            }
            published += 1;
        }
        if last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            let rate = published as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let bar = total_bytes.filter(|&t| t > 0).map_or_else(String::new, |total| {
                let done = (bytes_read.min(total) * 30 / total) as usize;
                format!("[{}{}] {:>3}% ", "#".repeat(done), ".".repeat(30 - done), bytes_read.min(total) * 100 / total)
            });
            let status = format!("{bar}{lines} lines read, {published} published ({rate:.0}/s)");
            if progress_to_terminal {
                eprint!("\r{status}   ");
            } else {
                eprintln!("{status}");
            }
        }
    }
    for delivery in in_flight.drain() {
        delivered(delivery).await.context("the broker did not take a record")?;
    }
    if progress_to_terminal {
        eprintln!();
    }
    let invalid: usize = rejected.values().map(Vec::len).sum();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{lines} lines: {} valid, {invalid} invalid; {published} published to {} in {:.1} s",
        lines - invalid as u64,
        config.kafka.topic,
        started.elapsed().as_secs_f64()
    )?;
    for (code, at) in &rejected {
        let shown: Vec<String> = at.iter().take(10).map(u64::to_string).collect();
        let more = if at.len() > 10 { format!(" and {} more", at.len() - 10) } else { String::new() };
        writeln!(out, "  {code}: {} (lines {}{more})", at.len(), shown.join(", "))?;
    }
    Ok(())
}
