//! The core's hot path on one core: decode + validate + dedup + price + aggregate, over the
//! load generator's realistic traffic (duplicates, retries, invalid records, unicode tags).
//! Reported as events per second (`cargo bench -p costline-core`).

use costline_core::{
    DedupIndex, DedupVerdict, EventDecoder, Identity, MinuteRollup, PartitionCounter, PriceTable, RecordMeta, Symbols,
};
use costline_loadgen::{GeneratedRecord, TrafficGenerator, TrafficMix};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

mod worker_process;

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
    worker_process::set_up();
    let (warm_up, records) = traffic();
    let prices = prices();
    let count_all = |counter: &mut PartitionCounter, records: &[GeneratedRecord]| {
        for record in records {
            let meta = RecordMeta { offset: counter.next_offset(), timestamp_ms: record.timestamp_ms };
            counter.count(meta, Some(record.key.as_bytes()), &record.payload, &prices);
        }
    };
    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    // One decoder for the stream, as a partition's counter has.
    group.bench_function("decode_validate", |b| {
        let mut decoder = EventDecoder::default();
        b.iter(|| records.iter().filter(|r| decoder.decode(&r.payload).is_ok()).count())
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

    // The whole path with its later steps left out, so that the differences say what each step
    // costs: identity + dedup, + price, + rollup window and measures (the whole path adds the
    // counted attempt's columns). Same steady state as above.
    #[derive(Clone, Copy, PartialEq, PartialOrd)]
    enum Step {
        Dedup,
        Price,
        Window,
    }
    let run_to = |last: Step, state: &mut (DedupIndex, MinuteRollup, Symbols), records: &[GeneratedRecord]| {
        let (dedup, rollup, symbols) = state;
        let mut decoder = EventDecoder::default();
        for record in records {
            let Ok(event) = decoder.decode(&record.payload) else { continue };
            let event_ms = event.event_time_ms(record.timestamp_ms);
            let identity = Identity::new(&event.external_request_id, event.attempt);
            let verdict = dedup.observe(identity, (record.timestamp_ms / 1000) as u32);
            if last >= Step::Price {
                let (cost, pricing) = prices.price(&event, event_ms);
                if last >= Step::Window {
                    let measures = rollup.window(&event, event_ms, symbols).2;
                    if let DedupVerdict::Counted { first_of_request } = verdict {
                        measures.add_attempt(&event, cost, &pricing, first_of_request);
                    }
                }
            }
        }
    };
    let mut steps = c.benchmark_group("steps");
    steps.throughput(Throughput::Elements(RECORDS as u64));
    steps.sample_size(20);
    for (name, last) in [
        ("decode_dedup", Step::Dedup),
        ("decode_dedup_price", Step::Price),
        ("decode_dedup_price_window", Step::Window),
    ] {
        steps.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut state = (DedupIndex::new(3600, 600), MinuteRollup::with_capacity(0), Symbols::default());
                    run_to(last, &mut state, &warm_up);
                    (state.0, MinuteRollup::with_capacity(state.1.len()), Symbols::default())
                },
                |mut state| {
                    run_to(last, &mut state, &records);
                    state
                },
                BatchSize::LargeInput,
            )
        });
    }
    steps.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
