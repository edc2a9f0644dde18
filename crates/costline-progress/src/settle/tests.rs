//! Every branch of the write-and-settle state machine, against the fake ledger.

use std::cell::Cell;
use std::time::Duration;

use costline_clickhouse::Targets;
use costline_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use super::{ExactWriter, WriteReport};
use crate::fake_ledger::{row, FakeLedger, WriteFault, TABLES};

#[derive(Default)]
struct Counts {
    inserts: Cell<u32>,
    failed: Cell<u32>,
    dropped: Cell<u32>,
    partial: Cell<u32>,
}

impl WriteReport for Counts {
    fn insert_took(&self, _elapsed: Duration) {
        self.inserts.set(self.inserts.get() + 1);
    }
    fn insert_failed(&self) {
        self.failed.set(self.failed.get() + 1);
    }
    fn row_dropped(&self) {
        self.dropped.set(self.dropped.get() + 1);
    }
    fn partial_write_found(&self) {
        self.partial.set(self.partial.get() + 1);
    }
}

fn writer(ledger: &FakeLedger) -> ExactWriter<FakeLedger> {
    let retry = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
    ExactWriter::new(ledger.clone(), "usage", "w".into(), retry, CancellationToken::new())
}

fn all_ours(_partition: i32) -> bool {
    true
}

/// Every table the row has data for received the flush exactly once.
fn assert_written_once(ledger: &FakeLedger, partition: u32, next_offset: u64, events: bool, rejects: bool) {
    for table in TABLES {
        let expected = u32::from((table != Targets::EVENTS || events) && (table != Targets::REJECTS || rejects));
        assert_eq!(ledger.received(partition, next_offset, table), expected, "table {}", table.bits());
    }
}

#[tokio::test]
async fn a_write_that_succeeds_is_not_settled() {
    let ledger = FakeLedger::default();
    let counts = Counts::default();
    let dropped = writer(&ledger).write(vec![row(0, 0, 10, true, true)], all_ours, &counts).await.unwrap();
    assert!(dropped.is_empty());
    assert_written_once(&ledger, 0, 10, true, true);
    assert_eq!(ledger.calls(), ["write w-1-1"]);
    assert_eq!((counts.inserts.get(), counts.failed.get()), (1, 0));
}

#[tokio::test]
async fn a_write_that_applied_nothing_is_cancelled_then_written_whole() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    let counts = Counts::default();
    writer(&ledger).write(vec![row(0, 0, 10, true, false)], all_ours, &counts).await.unwrap();
    assert_written_once(&ledger, 0, 10, true, false);
    let calls = ledger.calls();
    assert_eq!(calls[..2], ["write w-1-1", "cancel w-1-1"], "the failed insert is killed before anything else");
    assert_eq!(calls.last().map(String::as_str), Some("write w-1-2"));
    assert_eq!((counts.inserts.get(), counts.failed.get()), (2, 1));
}

#[tokio::test]
async fn a_failure_that_hid_a_success_is_not_written_again() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailAfter]);
    let counts = Counts::default();
    let dropped = writer(&ledger).write(vec![row(0, 0, 10, true, true)], all_ours, &counts).await.unwrap();
    assert!(dropped.is_empty(), "a row that landed is written, not dropped");
    assert_written_once(&ledger, 0, 10, true, true);
    assert_eq!(ledger.calls().iter().filter(|c| c.starts_with("write")).count(), 1);
}

#[tokio::test]
async fn a_half_applied_fan_out_is_completed_in_the_other_tables_only() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::Partial(Targets::EVENTS.with(Targets::MINUTE))]);
    let counts = Counts::default();
    writer(&ledger).write(vec![row(2, 5, 9, true, true)], all_ours, &counts).await.unwrap();
    assert_written_once(&ledger, 2, 9, true, true);
    assert_eq!(counts.partial.get(), 1, "the half-applied write is reported");
}

#[tokio::test]
async fn tables_a_row_has_nothing_for_count_as_holding_it() {
    // No counted attempt, no rejected record: only rollups and progress can show the flush.
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::Partial(Targets::MINUTE.with(Targets::HOUR).with(Targets::DAY))]);
    let counts = Counts::default();
    writer(&ledger).write(vec![row(1, 0, 4, false, false)], all_ours, &counts).await.unwrap();
    assert_written_once(&ledger, 1, 4, false, false);
}

#[tokio::test]
async fn a_row_another_writer_overtook_is_dropped_not_retried() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    // Meanwhile a new owner replayed the partition past the row's start, not to its end.
    ledger.apply(&row(3, 0, 6, true, false), Targets::ALL);
    let counts = Counts::default();
    let dropped = writer(&ledger).write(vec![row(3, 0, 10, true, false)], all_ours, &counts).await.unwrap();
    assert_eq!(dropped, [3]);
    assert_eq!(counts.dropped.get(), 1);
    for table in TABLES {
        assert_eq!(ledger.received(3, 10, table), 0, "table {}", table.bits());
    }
}

#[tokio::test]
async fn a_row_another_writer_replayed_past_its_end_is_dropped_not_completed() {
    // The rollups and flushes seem to hold the row (their progress is beyond its end), but
    // what they hold is the other writer's; completing the row would double its events.
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    ledger.apply(&row(3, 0, 20, true, false), Targets::ALL);
    let counts = Counts::default();
    let dropped = writer(&ledger).write(vec![row(3, 0, 10, true, false)], all_ours, &counts).await.unwrap();
    assert_eq!(dropped, [3]);
    assert_eq!(ledger.received(3, 10, Targets::EVENTS), 0);
    assert_eq!(ledger.calls().iter().filter(|c| c.starts_with("write")).count(), 1, "not written again");
}

#[tokio::test]
async fn of_several_rows_each_is_settled_on_its_own() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::Partial(Targets::EVENTS)]);
    ledger.apply(&row(4, 0, 15, false, false), Targets::ALL); // partition 4 overtaken
    let rows = vec![row(1, 0, 10, true, false), row(4, 10, 20, true, false), row(5, 0, 7, false, true)];
    let counts = Counts::default();
    let dropped = writer(&ledger).write(rows, all_ours, &counts).await.unwrap();
    assert_eq!(dropped, [4]);
    assert_written_once(&ledger, 1, 10, true, false);
    assert_written_once(&ledger, 5, 7, false, true);
    assert_eq!(ledger.received(4, 20, Targets::EVENTS), 1, "what the failed insert applied stays");
    assert_eq!(ledger.received(4, 20, Targets::MINUTE), 0, "the overtaken row is not completed");
}

#[tokio::test]
async fn no_insert_is_retried_before_the_failed_one_is_settled() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailAfter]);
    // Three reads in a row fail: ClickHouse is still away after the failed insert.
    ledger.fail_reads(3);
    let counts = Counts::default();
    writer(&ledger).write(vec![row(0, 0, 10, true, true)], all_ours, &counts).await.unwrap();
    assert_written_once(&ledger, 0, 10, true, true);
    let calls = ledger.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("write")).count(), 1, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "cancel w-1-1").count(), 4, "settled again each time: {calls:?}");
}

#[tokio::test]
async fn a_row_of_a_partition_no_longer_ours_is_never_written() {
    let ledger = FakeLedger::default();
    let counts = Counts::default();
    let owns = |partition: i32| partition != 7;
    let dropped = writer(&ledger)
        .write(vec![row(7, 0, 10, true, false), row(8, 0, 3, true, false)], owns, &counts)
        .await
        .unwrap();
    assert_eq!(dropped, [7]);
    assert_eq!(ledger.received(7, 10, Targets::EVENTS), 0);
    assert_written_once(&ledger, 8, 3, true, false);
}

#[tokio::test]
async fn a_partition_lost_after_a_failed_insert_is_only_cancelled() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    let still_ours = Cell::new(true);
    let counts = Counts::default();
    let mut writer = writer(&ledger);
    let owns = |_partition: i32| {
        // Ours for the first write only: the revoke comes while the lane backs off.
        let owned = still_ours.get();
        still_ours.set(false);
        owned
    };
    let dropped = writer.write(vec![row(0, 0, 10, true, false)], owns, &counts).await.unwrap();
    assert_eq!(dropped, [0]);
    assert_eq!(ledger.calls(), ["write w-1-1", "cancel w-1-1"], "no settle reads, no second insert");
}

#[tokio::test]
async fn a_cancel_that_fails_for_a_lost_partition_is_not_retried() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    ledger.fail_reads(1);
    let first = Cell::new(true);
    let owns = |_partition: i32| first.replace(false);
    let counts = Counts::default();
    let dropped = writer(&ledger).write(vec![row(0, 0, 10, true, false)], owns, &counts).await.unwrap();
    assert_eq!(dropped, [0]);
    assert_eq!(ledger.calls(), ["write w-1-1", "cancel w-1-1"]);
}

#[tokio::test]
async fn shutdown_while_clickhouse_refuses_gives_up_with_a_reason() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore; 100]);
    let shutdown = CancellationToken::new();
    let retry = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
    let mut writer = ExactWriter::new(ledger.clone(), "usage", "w".into(), retry, shutdown.clone());
    shutdown.cancel();
    let counts = Counts::default();
    let stopped = writer.write(vec![row(0, 0, 10, true, false)], all_ours, &counts).await.unwrap_err();
    assert!(stopped.to_string().contains("ClickHouse was refusing a flush"), "{stopped}");
    assert_eq!(ledger.received(0, 10, Targets::PROGRESS), 0);
}

#[tokio::test]
async fn query_ids_are_unique_per_job_and_attempt() {
    let ledger = FakeLedger::default();
    ledger.fail_writes(&[WriteFault::FailBefore]);
    let mut writer = writer(&ledger);
    let counts = Counts::default();
    writer.write(vec![row(0, 0, 10, true, false)], all_ours, &counts).await.unwrap();
    writer.write(vec![row(0, 10, 20, true, false)], all_ours, &counts).await.unwrap();
    let writes: Vec<String> = ledger.calls().into_iter().filter(|c| c.starts_with("write")).collect();
    assert_eq!(writes, ["write w-1-1", "write w-1-2", "write w-2-1"]);
}
