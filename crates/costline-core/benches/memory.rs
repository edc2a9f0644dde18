//! How the worker's memory grows with the number of distinct rollup keys in a batch and with
//! the dedup horizon (`cargo bench -p costline-core --bench memory`). Heap bytes are counted by
//! a wrapping global allocator, so the figures are exact for this build, not RSS estimates.

// A `GlobalAlloc` is unsafe to implement; this one only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use costline_core::{DedupIndex, Identity, PartitionCounter, PriceTable, RecordMeta};

struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// A valid event whose rollup key is the `key`-th of the batch (distinct tenant and endpoint).
fn payload(request: u64, key: u64) -> Vec<u8> {
    format!(
        r#"{{"externalRequestId":"req-{request:016x}","provider":"openai","model":"gpt-4o-mini","endpointTag":"endpoint.{}","promptVersion":"v{}","userId":"t_{key:012x}","inputTokens":812,"cachedInputTokens":128,"outputTokens":96,"latencyMs":740,"status":"success","timestamp":1790000000000}}"#,
        key % 500,
        key % 7
    )
    .into_bytes()
}

fn main() {
    let prices = PriceTable::from_toml(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/prices.toml"))
            .expect("schemas/prices.toml"),
        "prices.toml",
    )
    .expect("price table");

    println!("One partition: 100,000 counted events spread over K distinct rollup keys (one minute);");
    println!("heap of the open batch plus the dedup memory of its 100,000 identities");
    println!("| rollup keys | heap | per event | per key beyond 1 key |");
    println!("|---|---|---|---|");
    let events = 100_000u64;
    let mut single_key_bytes = 0usize;
    for keys in [1u64, 1_000, 10_000, 100_000] {
        let mut counter = PartitionCounter::new(DedupIndex::new(3600, 600), 0);
        let before = live();
        for i in 0..events {
            let meta = RecordMeta { offset: i, timestamp_ms: 1_790_000_000_000 };
            counter.count(meta, None, &payload(i, i % keys), &prices);
        }
        let bytes = live() - before;
        if keys == 1 {
            single_key_bytes = bytes;
        }
        let per_key =
            if keys > 1 { format!("{} B", (bytes - single_key_bytes) / (keys as usize - 1)) } else { "-".into() };
        println!("| {keys} | {:.1} MiB | {} B | {per_key} |", mib(bytes), bytes / events as usize);
    }

    println!();
    println!("Dedup memory of one partition at 1,000 events/s (identities live = rate x horizon)");
    println!("| horizon | identities | heap | per identity |");
    println!("|---|---|---|---|");
    for horizon_secs in [600u32, 3600, 6 * 3600] {
        let before = live();
        let mut index = DedupIndex::new(horizon_secs, 600);
        let identities = horizon_secs as u64 * 1000;
        for i in 0..identities {
            let id = format!("req-{i:016x}");
            index.observe(Identity::new(&id, 1), 1_790_000_000 + (i / 1000) as u32);
        }
        let bytes = live() - before;
        println!(
            "| {} min | {} | {:.1} MiB | {} B |",
            horizon_secs / 60,
            index.len(),
            mib(bytes),
            bytes / index.len().max(1)
        );
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
