//! Every branch of taking a partition over, against the fake ledger.

use costline_clickhouse::{RememberedAttempt, Targets};
use costline_core::{Outcome, RecordMeta};
use tokio_util::sync::CancellationToken;

use super::{record_time_bound_ms, DedupSettings, Replay, Takeover, TakeoverError, UnfinishedFlush};
use crate::fake_ledger::{event, prices, row, FakeLedger};

const DEDUP: DedupSettings = DedupSettings { horizon_secs: 3600, grace_secs: 600, max_clock_skew_secs: 300 };

fn takeover(ledger: &FakeLedger) -> Takeover<FakeLedger> {
    Takeover::new(ledger.clone(), DEDUP)
}

#[tokio::test]
async fn a_partition_never_flushed_starts_at_zero_remembering_nothing() {
    let ledger = FakeLedger::default();
    let start = takeover(&ledger).open("usage", 0).await.unwrap();
    assert_eq!((start.next_offset, start.counter.next_offset(), start.unfinished), (0, 0, None));
    assert_eq!(ledger.calls(), ["progress", "unfinished_flush 0 0"], "nothing to remember from");
}

#[tokio::test]
async fn a_flushed_partition_resumes_after_its_progress_and_remembers_its_attempts() {
    let ledger = FakeLedger::default();
    let now_secs = (record_time_bound_ms(0) / 1000) as u32;
    let mut flushed = row(2, 0, 40, true, false);
    flushed.newest_record_time = now_secs;
    ledger.apply(&flushed, Targets::ALL);
    ledger.set_remembered(vec![RememberedAttempt {
        kafka_offset: 0,
        external_request_id: "seen".into(),
        attempt: 1,
        record_secs: now_secs,
    }]);
    let mut start = takeover(&ledger).open("usage", 2).await.unwrap();
    assert_eq!((start.next_offset, start.counter.next_offset(), start.unfinished), (40, 40, None));
    let prices = prices();
    let at = |offset| RecordMeta { offset, timestamp_ms: i64::from(now_secs) * 1000 };
    assert_eq!(start.counter.count(at(40), None, &event("seen"), &prices), Outcome::Duplicate);
    assert_eq!(start.counter.count(at(41), None, &event("new"), &prices), Outcome::Counted);
    let from_secs = now_secs - DEDUP.horizon_secs - DEDUP.grace_secs;
    assert!(ledger.calls().contains(&format!("remembered 2 {from_secs} 40")), "{:?}", ledger.calls());
}

#[tokio::test]
async fn a_far_future_record_time_does_not_empty_the_rebuild() {
    let ledger = FakeLedger::default();
    let mut flushed = row(0, 0, 5, true, false);
    flushed.newest_record_time = u32::MAX;
    ledger.apply(&flushed, Targets::ALL);
    takeover(&ledger).open("usage", 0).await.unwrap();
    let bound_secs = (record_time_bound_ms(DEDUP.max_clock_skew_secs) / 1000) as u32;
    let from_secs: u32 = ledger
        .calls()
        .iter()
        .find_map(|call| call.strip_prefix("remembered 0 ")?.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(from_secs <= bound_secs - DEDUP.horizon_secs - DEDUP.grace_secs + 5, "{from_secs}");
}

#[tokio::test]
async fn a_half_applied_flush_is_found_with_the_tables_that_hold_it() {
    let ledger = FakeLedger::default();
    ledger.apply(&row(1, 0, 20, true, false), Targets::ALL);
    // The next flush reached the events and the minute rollup, then its writer died.
    ledger.apply(&row(1, 20, 30, true, false), Targets::EVENTS.with(Targets::MINUTE));
    let start = takeover(&ledger).open("usage", 1).await.unwrap();
    assert_eq!(start.next_offset, 20, "the replay starts at the progress in flushes");
    let unfinished = start.unfinished.unwrap();
    assert_eq!(unfinished, UnfinishedFlush { next_offset: 30, holding: Targets::EVENTS.with(Targets::MINUTE) });
    assert_eq!(unfinished.missing(), Targets::ALL.without(Targets::EVENTS).without(Targets::MINUTE));
}

#[tokio::test]
async fn a_first_flush_left_half_applied_is_replayed_from_zero() {
    let ledger = FakeLedger::default();
    ledger.apply(&row(3, 0, 12, true, true), Targets::EVENTS.with(Targets::REJECTS));
    let start = takeover(&ledger).open("usage", 3).await.unwrap();
    assert_eq!(start.next_offset, 0);
    assert_eq!(
        start.unfinished,
        Some(UnfinishedFlush { next_offset: 12, holding: Targets::EVENTS.with(Targets::REJECTS) })
    );
}

#[tokio::test]
async fn a_ledger_that_does_not_answer_fails_the_open_and_is_retried() {
    let ledger = FakeLedger::default();
    ledger.apply(&row(0, 0, 8, true, false), Targets::ALL);
    ledger.apply(&row(0, 8, 9, true, false), Targets::EVENTS);
    for read in ["progress", "unfinished_flush", "tables_holding", "remembered"] {
        ledger.fail_next(read);
        let failed = takeover(&ledger).open("usage", 0).await.err().unwrap();
        let expected = match read {
            "progress" => matches!(failed, TakeoverError::Progress(_)),
            "remembered" => matches!(failed, TakeoverError::Remembered(_)),
            _ => matches!(failed, TakeoverError::Unfinished(_)),
        };
        assert!(expected, "{read}: {failed}");
        assert!(ledger.calls().last().unwrap().starts_with(read), "nothing is read after a failure");
    }
    ledger.fail_reads(2);
    let start = takeover(&ledger).open_retrying("usage", 0, &CancellationToken::new()).await.unwrap();
    assert_eq!((start.next_offset, start.unfinished.map(|f| f.next_offset)), (8, Some(9)));
}

#[tokio::test]
async fn a_take_over_gives_up_only_at_shutdown() {
    let ledger = FakeLedger::default();
    ledger.fail_reads(u32::MAX);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let stopped = takeover(&ledger).open_retrying("usage", 0, &shutdown).await.err().unwrap();
    assert!(stopped.to_string().contains("taking a partition over"), "{stopped}");
}

#[test]
fn the_replay_completes_an_unfinished_flush_exactly_at_its_end() {
    let flush = UnfinishedFlush { next_offset: 30, holding: Targets::NONE };
    assert_eq!([29, 30, 31].map(|at| flush.replay_at(at)), [Replay::Short, Replay::AtEnd, Replay::Passed]);
}
