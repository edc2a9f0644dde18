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

/// The measured records, and the records before them in the same stream (to warm a counter up).
fn traffic() -> (Vec<GeneratedRecord>, Vec<GeneratedRecord>) {
    let mut stream = TrafficGenerator::new(TrafficMix::new(42, 1_790_000_000_000));
    let warm_up = stream.by_ref().take(RECORDS).collect();
    (warm_up, stream.take(RECORDS).collect())
}

fn prices() -> PriceTable {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/prices.toml")).unwrap();
    PriceTable::from_toml(&text, "prices.toml").unwrap()
}

fn counting(c: &mut Criterion) {
    let (warm_up, records) = traffic();
    let prices = prices();
    let count_all = |counter: &mut PartitionCounter, records: &[GeneratedRecord]| {
        for record in records {
            let meta = RecordMeta { offset: counter.next_offset(), timestamp_ms: record.timestamp_ms };
            counter.count(meta, &record.payload, &prices);
        }
    };
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    group.bench_function("decode_validate", |b| {
        b.iter(|| records.iter().filter(|r| decode_event(&r.payload).is_ok()).count())
    });
    // A worker in steady state: the counter has flushed a batch before (its dedup memory holds
    // the previous 100,000 records, the new batch is sized like the last one).
    group.bench_function("decode_dedup_price_aggregate", |b| {
        b.iter_batched(
            || {
                let mut counter = PartitionCounter::new(DedupIndex::new(3600, 600), 0);
                count_all(&mut counter, &warm_up);
                drop(counter.take_batch());
                counter
            },
            |mut counter| {
                count_all(&mut counter, &records);
                counter
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
