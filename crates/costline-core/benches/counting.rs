//! The core's hot path on one core: decode + validate + dedup + price + aggregate, over the
//! load generator's realistic traffic (duplicates, retries, invalid records, unicode tags).
//! Reported as events per second (`cargo bench -p costline-core`).

use costline_core::{decode_event, DedupIndex, PartitionCounter, PriceTable, RecordMeta};
use costline_loadgen::{GeneratedRecord, TrafficGenerator, TrafficMix};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

/// The allocator of the `costline` binary, so that the figures are the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 100_000;

fn traffic() -> Vec<GeneratedRecord> {
    TrafficGenerator::new(TrafficMix::new(42, 1_790_000_000_000)).take(RECORDS).collect()
}

fn prices() -> PriceTable {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/prices.toml")).unwrap();
    PriceTable::from_toml(&text, "prices.toml").unwrap()
}

fn counting(c: &mut Criterion) {
    let records = traffic();
    let prices = prices();
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    group.bench_function("decode_validate", |b| {
        b.iter(|| records.iter().filter(|r| decode_event(&r.payload).is_ok()).count())
    });
    group.bench_function("decode_dedup_price_aggregate", |b| {
        b.iter_batched(
            || PartitionCounter::new(DedupIndex::new(3600, 600), 0),
            |mut counter| {
                for (offset, record) in records.iter().enumerate() {
                    let meta = RecordMeta { offset: offset as u64, timestamp_ms: record.timestamp_ms };
                    counter.count(meta, &record.payload, &prices);
                }
                counter.take_batch()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
