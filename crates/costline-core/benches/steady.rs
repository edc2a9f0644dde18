//! The counting path of a long-running counter, outside criterion: one `PartitionCounter`
//! counts `BATCHES` batches of 100,000 records of the load generator's stream (default 20) and
//! takes each batch as a flush would, so its dedup memory settles where the horizon and the
//! stream's record times put it (~385,000 requests) instead of the criterion bench's
//! 100,000–200,000. Prints each batch's time and the median from the sixth batch on.
//!
//!     cargo bench -p costline-core --bench steady [-- BATCHES]
//!
//! It is also the target for repeatable instruction and cache counts, which the VM's varying
//! speed does not disturb (BENCHMARKS.md): build with `cargo bench --no-run`, then
//!
//!     valgrind --tool=callgrind --cache-sim=yes \
//!         --toggle-collect='costline_core::batch::PartitionCounter::count*' <binary> 3

use std::time::Instant;

use costline_core::{DedupIndex, PartitionCounter, PriceTable, RecordMeta};
use costline_loadgen::{TrafficGenerator, TrafficMix};

mod worker_process;

const BATCH: usize = 100_000;
/// Batches before the dedup memory has settled, left out of the median.
const SETTLING: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    worker_process::set_up();
    // `cargo bench` passes `--bench`; the one other argument is the number of batches.
    let batches = match std::env::args().skip(1).find(|arg| !arg.starts_with("--")) {
        Some(arg) => arg.parse::<usize>().map_err(|e| format!("BATCHES must be a number, got {arg:?} ({e})"))?,
        None => 20,
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/prices.toml");
    let prices = PriceTable::from_toml(&std::fs::read_to_string(path)?, "prices.toml")?;
    let stream: Vec<_> = TrafficGenerator::new(TrafficMix::new(42, 1_790_000_000_000)).take(BATCH * batches).collect();
    let mut counter = PartitionCounter::new(DedupIndex::new(3600, 600), 0);
    let mut settled_ms = Vec::new();
    for (number, records) in stream.chunks(BATCH).enumerate() {
        let started = Instant::now();
        for record in records {
            let meta = RecordMeta { offset: counter.next_offset(), timestamp_ms: record.timestamp_ms };
            counter.count(meta, Some(record.key.as_bytes()), &record.payload, &prices);
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        println!("batch {number:>3}: {ms:7.1} ms, {:>7} requests remembered", counter.dedup().len());
        if number >= SETTLING {
            settled_ms.push(ms);
        }
        drop(counter.take_batch());
    }
    settled_ms.sort_by(f64::total_cmp);
    if let Some(median) = settled_ms.get(settled_ms.len() / 2) {
        println!("median from batch {SETTLING} on: {median:.1} ms per {BATCH} records");
    }
    Ok(())
}
