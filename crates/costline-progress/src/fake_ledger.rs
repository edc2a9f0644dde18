//! An in-memory ledger for the unit tests: it keeps, per table, how often each flush reached
//! it, and fails writes and reads on command, the ways ClickHouse does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use costline_clickhouse::{LedgerRow, PartitionProgress, RememberedAttempt, SinkError, Targets};
use tokio::sync::Semaphore;

use crate::store::LedgerStore;

/// The tables of a ledger row, one bit each.
pub const TABLES: [Targets; 6] =
    [Targets::EVENTS, Targets::REJECTS, Targets::MINUTE, Targets::HOUR, Targets::DAY, Targets::PROGRESS];

/// How the next write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Fails before anything is applied (the server was down).
    FailBefore,
    /// Applies every row in full, then fails (a timeout hiding a success).
    FailAfter,
    /// Applies the rows to these tables only, then fails (the server stopped mid fan-out).
    Partial(Targets),
}

#[derive(Default)]
struct Ledger {
    /// How many times each table received each flush: `(partition, flush end, table bit)`.
    received: HashMap<(u32, u64, u8), u32>,
    progress: HashMap<u32, PartitionProgress>,
    writes: VecDeque<WriteFault>,
    failing_reads: u32,
    /// Reads that fail once, named by how their call starts.
    failing_calls: Vec<&'static str>,
    remembered: Vec<RememberedAttempt>,
    calls: Vec<String>,
    /// While set, a write waits for a permit of it (an insert ClickHouse is slow to answer).
    write_gate: Option<Arc<Semaphore>>,
}

#[derive(Clone, Default)]
pub struct FakeLedger {
    ledger: Arc<Mutex<Ledger>>,
}

fn timeout() -> SinkError {
    SinkError::Timeout(Duration::from_secs(1))
}

impl FakeLedger {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("a test panicked while holding the fake ledger")
    }

    /// The next writes go as `faults` say, in order; writes after them succeed.
    pub fn fail_writes(&self, faults: &[WriteFault]) {
        self.ledger().writes.extend(faults.iter().copied());
    }

    /// The next `reads` reads (cancel included) fail with a timeout.
    pub fn fail_reads(&self, reads: u32) {
        self.ledger().failing_reads = reads;
    }

    /// The next read whose call starts with `call` (e.g. `remembered`) fails with a timeout.
    pub fn fail_next(&self, call: &'static str) {
        self.ledger().failing_calls.push(call);
    }

    /// Holds writes until permits are added to the returned gate.
    pub fn hold_writes(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        self.ledger().write_gate = Some(gate.clone());
        gate
    }

    pub fn set_remembered(&self, attempts: Vec<RememberedAttempt>) {
        self.ledger().remembered = attempts;
    }

    /// How many times `table` received the flush of `partition` that ends at `next_offset`.
    pub fn received(&self, partition: u32, next_offset: u64, table: Targets) -> u32 {
        self.ledger().received.get(&(partition, next_offset, table.bits())).copied().unwrap_or(0)
    }

    /// Every call so far, e.g. `write w-1-1`, `cancel w-1-1`, `progress`.
    pub fn calls(&self) -> Vec<String> {
        self.ledger().calls.clone()
    }

    /// Applies `row` to `tables` (and only those its `targets` name and it has data for).
    pub fn apply(&self, row: &LedgerRow, tables: Targets) {
        let mut ledger = self.ledger();
        for table in TABLES {
            let empty = (table == Targets::EVENTS && row.ev_offset.is_empty())
                || (table == Targets::REJECTS && row.rj_offset.is_empty());
            if empty || !row.targets.contains(table) || !tables.contains(table) {
                continue;
            }
            *ledger.received.entry((row.kafka_partition, row.next_offset, table.bits())).or_default() += 1;
            if table == Targets::PROGRESS {
                let progress = ledger.progress.entry(row.kafka_partition).or_insert(PartitionProgress {
                    kafka_partition: row.kafka_partition,
                    next_offset: 0,
                    newest_record_secs: 0,
                });
                progress.next_offset = progress.next_offset.max(row.next_offset);
                progress.newest_record_secs = progress.newest_record_secs.max(row.newest_record_time);
            }
        }
    }

    /// Records a call; fails it if reads are to fail.
    fn read(&self, call: String) -> Result<MutexGuard<'_, Ledger>, SinkError> {
        let mut ledger = self.ledger();
        if let Some(at) = ledger.failing_calls.iter().position(|prefix| call.starts_with(prefix)) {
            ledger.failing_calls.remove(at);
            ledger.calls.push(call);
            return Err(timeout());
        }
        ledger.calls.push(call);
        if ledger.failing_reads > 0 {
            ledger.failing_reads -= 1;
            return Err(timeout());
        }
        Ok(ledger)
    }

    /// The newest flush end `table` holds for `partition`.
    fn newest_flush(ledger: &Ledger, partition: u32, table: Targets) -> u64 {
        let ends = ledger.received.keys().filter(|&&(p, _, bit)| p == partition && bit == table.bits());
        ends.map(|&(_, end, _)| end).max().unwrap_or(0)
    }
}

impl LedgerStore for FakeLedger {
    async fn write(&self, rows: &[LedgerRow], query_id: &str) -> Result<(), SinkError> {
        let gate = self.ledger().write_gate.clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("the test never closes the write gate").forget();
        }
        let fault = {
            let mut ledger = self.ledger();
            ledger.calls.push(format!("write {query_id}"));
            ledger.writes.pop_front()
        };
        let applied = match fault {
            None | Some(WriteFault::FailAfter) => Targets::ALL,
            Some(WriteFault::FailBefore) => Targets::NONE,
            Some(WriteFault::Partial(tables)) => tables,
        };
        for row in rows {
            self.apply(row, applied);
        }
        match fault {
            None => Ok(()),
            Some(_) => Err(timeout()),
        }
    }

    async fn cancel(&self, query_id: &str) -> Result<(), SinkError> {
        self.read(format!("cancel {query_id}")).map(drop)
    }

    async fn progress(&self, _topic: &str) -> Result<HashMap<u32, PartitionProgress>, SinkError> {
        Ok(self.read("progress".into())?.progress.clone())
    }

    async fn tables_holding(&self, _topic: &str, partition: u32, next_offset: u64) -> Result<Targets, SinkError> {
        let ledger = self.read(format!("tables_holding {partition} {next_offset}"))?;
        let mut holding = Targets::NONE;
        if ledger.progress.get(&partition).is_some_and(|p| p.next_offset >= next_offset) {
            holding = holding.with(Targets::PROGRESS);
        }
        for table in [Targets::EVENTS, Targets::REJECTS] {
            if ledger.received.contains_key(&(partition, next_offset, table.bits())) {
                holding = holding.with(table);
            }
        }
        for table in [Targets::MINUTE, Targets::HOUR, Targets::DAY] {
            if Self::newest_flush(&ledger, partition, table) >= next_offset {
                holding = holding.with(table);
            }
        }
        Ok(holding)
    }

    async fn unfinished_flush(&self, _topic: &str, partition: u32, after: u64) -> Result<Option<u64>, SinkError> {
        let ledger = self.read(format!("unfinished_flush {partition} {after}"))?;
        let tables = TABLES.into_iter().filter(|&table| table != Targets::PROGRESS);
        let end = tables.map(|table| Self::newest_flush(&ledger, partition, table)).max().unwrap_or(0);
        Ok((end > after).then_some(end))
    }

    async fn remembered(
        &self,
        _topic: &str,
        partition: u32,
        from_secs: u32,
        below_offset: u64,
    ) -> Result<Vec<RememberedAttempt>, SinkError> {
        let ledger = self.read(format!("remembered {partition} {from_secs} {below_offset}"))?;
        Ok(ledger.remembered.iter().filter(|a| a.record_secs >= from_secs).cloned().collect())
    }
}

/// A row of `partition` covering `first_offset..next_offset`, with counted attempts and
/// rejected records as asked, for every table.
pub fn row(partition: u32, first_offset: u64, next_offset: u64, events: bool, rejects: bool) -> LedgerRow {
    LedgerRow {
        kafka_topic: "usage".into(),
        kafka_partition: partition,
        first_offset,
        next_offset,
        targets: Targets::ALL,
        ev_offset: if events { vec![first_offset] } else { Vec::new() },
        rj_offset: if rejects { vec![next_offset - 1] } else { Vec::new() },
        ..LedgerRow::default()
    }
}

/// A valid usage event of `request`, attempt 1.
pub fn event(request: &str) -> Vec<u8> {
    format!(
        r#"{{"externalRequestId":"{request}","attempt":1,"provider":"OpenAI","model":"gpt-4o","endpointTag":"checkout.summary","promptVersion":"v1","userId":"t1","inputTokens":1000,"cachedInputTokens":200,"outputTokens":100,"latencyMs":250,"status":"success","timestamp":"2025-05-01T10:00:30Z"}}"#
    )
    .into_bytes()
}

/// A price table that prices [`event`].
pub fn prices() -> costline_core::PriceTable {
    costline_core::PriceTable::from_toml(
        "version=\"t\"\n[[price]]\nprovider=\"openai\"\nmodel=\"gpt-4o\"\neffective_from=\"2024-01-01\"\ninput=\"2.5\"\noutput=\"10\"\n",
        "t",
    )
    .expect("the test price table parses")
}
