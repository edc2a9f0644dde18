//! Which attempts were seen before: the identity `(externalRequestId, attempt)` of SPEC §2.
//!
//! One entry per live request, not per attempt: a 96-bit hash of the request id, the Kafka
//! record time (seconds) of the newest counted attempt, and a bit per attempt number 1..=32
//! (rarer higher attempt numbers live in a small side map). That is 20 bytes per entry, three
//! entries to a cache line (`line_table`): 24–37 bytes per remembered request while the table
//! grows, at most 48 after sweeps; less per identity.
//!
//! The rule: a request is *live* at record time `T` if one of its attempts was counted at or
//! after `T − horizon`. A copy of an attempt is a duplicate iff its request is live and the
//! attempt's bit is set. A copy arriving within the horizon of the first copy is therefore
//! always caught (the request stays live from the first copy on), while memory is bounded:
//! entries whose request is no longer live for any record time within `grace` of the newest
//! one seen are swept. Decisions never depend on when a sweep ran, so replaying a partition
//! after a crash decides every event exactly as the first run did.

mod line_table;

use hashbrown::HashMap;
use line_table::{Entry, LineTable};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use xxhash_rust::xxh3::xxh3_128_with_seed;

/// How far record times may run backwards within a partition and still see every entry.
pub const DEFAULT_GRACE_SECS: u32 = 600;
/// Sweep at most once per this much record time, and at most once per eighth of the time an
/// entry is kept: a sweep reads the whole table, so in steady traffic it should free about an
/// eighth of it.
const SWEEP_EVERY_SECS: u32 = 60;

/// An `externalRequestId`, hashed: where its entry lives, and (with an attempt) an [`Identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHash([u32; 3]);

impl RequestHash {
    /// The hash of a request id under this process's seed. Request ids come from producers:
    /// with a fixed hash, ids crafted to share a slot could make every lookup walk a long
    /// chain. Hashes are never stored (a restart rebuilds the memory from the ids), so the
    /// seed can differ between processes.
    pub fn of(external_request_id: &[u8]) -> RequestHash {
        RequestHash::seeded(external_request_id, process_seed())
    }

    fn seeded(external_request_id: &[u8], seed: u64) -> RequestHash {
        let h = xxh3_128_with_seed(external_request_id, seed);
        RequestHash([(h >> 96) as u32, (h >> 64) as u32, h as u32])
    }
}

/// A random seed, fixed for the life of the process (from the standard library's per-process
/// random keys).
fn process_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x636f_7374_6c69_6e65);
        hasher.finish()
    })
}

/// The identity of one attempt, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    request: [u32; 3],
    attempt: u32,
}

impl Identity {
    pub fn new(external_request_id: &str, attempt: u32) -> Identity {
        Identity::of(RequestHash::of(external_request_id.as_bytes()), attempt)
    }

    pub fn of(RequestHash(request): RequestHash, attempt: u32) -> Identity {
        Identity { request, attempt }
    }
}

/// What the index says of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupVerdict {
    /// Seen before within the horizon: count it as a duplicate only.
    Duplicate,
    /// First copy: count it. `first_of_request` when no other attempt of its request is live.
    Counted { first_of_request: bool },
}

/// The remembered identities of one partition.
pub struct DedupIndex {
    live: LineTable,
    high_attempts: HashMap<Identity, u32>,
    horizon_secs: u32,
    grace_secs: u32,
    newest_secs: u32,
    swept_at_secs: u32,
}

impl DedupIndex {
    pub fn new(horizon_secs: u32, grace_secs: u32) -> DedupIndex {
        DedupIndex {
            live: LineTable::with_capacity(0),
            high_attempts: HashMap::new(),
            horizon_secs,
            grace_secs,
            newest_secs: 0,
            swept_at_secs: 0,
        }
    }

    /// Starts loading the memory that [`DedupIndex::observe`] of an attempt of `request` reads.
    pub fn prefetch(&self, RequestHash(request): RequestHash) {
        self.live.prefetch(&request);
    }

    /// Decides one copy with Kafka record time `record_secs` and remembers it if counted.
    pub fn observe(&mut self, id: Identity, record_secs: u32) -> DedupVerdict {
        let live_since = record_secs.saturating_sub(self.horizon_secs);
        // One probe of the table, whatever the outcome.
        let found = self.live.find(&id.request);
        let verdict = match found.map(|at| self.live.get_mut(at)) {
            Some(entry) if entry.last_counted_secs >= live_since => {
                let seen = if id.attempt <= 32 {
                    let bit = 1u32 << (id.attempt - 1);
                    let seen = entry.attempts & bit != 0;
                    entry.attempts |= bit;
                    seen
                } else {
                    match self.high_attempts.insert(id, record_secs) {
                        Some(previous) if previous >= live_since => {
                            self.high_attempts.insert(id, previous);
                            true
                        }
                        _ => false,
                    }
                };
                if seen {
                    return DedupVerdict::Duplicate;
                }
                entry.last_counted_secs = entry.last_counted_secs.max(record_secs);
                DedupVerdict::Counted { first_of_request: false }
            }
            // Not live: a new request, or an expired entry that the next sweep would drop.
            expired => {
                let fresh = Entry {
                    request: id.request,
                    last_counted_secs: record_secs,
                    attempts: if id.attempt <= 32 { 1 << (id.attempt - 1) } else { 0 },
                };
                if id.attempt > 32 {
                    self.high_attempts.insert(id, record_secs);
                }
                match expired {
                    Some(entry) => *entry = fresh,
                    None => self.live.insert_new(fresh),
                }
                DedupVerdict::Counted { first_of_request: true }
            }
        };
        self.advance(record_secs);
        verdict
    }

    fn advance(&mut self, record_secs: u32) {
        if record_secs <= self.newest_secs {
            return;
        }
        self.newest_secs = record_secs;
        if record_secs - self.swept_at_secs < SWEEP_EVERY_SECS.max(self.kept_secs() / 8) {
            return;
        }
        self.swept_at_secs = record_secs;
        // Dead for every record time at or after newest − grace.
        let keep_from = record_secs.saturating_sub(self.kept_secs());
        self.live.retain(|e| e.last_counted_secs >= keep_from);
        self.high_attempts.retain(|_, secs| *secs >= keep_from);
        self.live.shrink_if_sparse();
    }

    /// How long after its request's newest counted attempt an entry is kept.
    fn kept_secs(&self) -> u32 {
        self.horizon_secs.saturating_add(self.grace_secs)
    }

    /// Record time from which counted attempts must be replayed to rebuild this index after a
    /// restart, given the newest record time already counted.
    pub fn rebuild_from_secs(&self, newest_counted_secs: u32) -> u32 {
        newest_counted_secs.saturating_sub(self.kept_secs())
    }

    /// Remembered requests.
    pub fn len(&self) -> usize {
        self.live.len() + self.high_attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held by the two tables.
    pub fn memory_bytes(&self) -> usize {
        self.live.allocation_size() + self.high_attempts.allocation_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: u32 = 3600;

    fn counted(first: bool) -> DedupVerdict {
        DedupVerdict::Counted { first_of_request: first }
    }

    #[test]
    fn first_copy_counts_later_copies_are_duplicates() {
        let mut index = DedupIndex::new(H, DEFAULT_GRACE_SECS);
        assert_eq!(index.observe(Identity::new("r1", 1), 1000), counted(true));
        assert_eq!(index.observe(Identity::new("r1", 1), 1000 + H), DedupVerdict::Duplicate);
        assert_eq!(index.observe(Identity::new("r1", 2), 1010), counted(false));
        assert_eq!(index.observe(Identity::new("r1", 2), 1011), DedupVerdict::Duplicate);
        assert_eq!(index.observe(Identity::new("r2", 1), 1012), counted(true));
        assert_eq!(index.observe(Identity::new("r1", 40), 1013), counted(false));
        assert_eq!(index.observe(Identity::new("r1", 40), 1014), DedupVerdict::Duplicate);
    }

    #[test]
    fn copies_beyond_the_horizon_count_again() {
        let mut index = DedupIndex::new(H, DEFAULT_GRACE_SECS);
        assert_eq!(index.observe(Identity::new("r1", 1), 1000), counted(true));
        assert_eq!(index.observe(Identity::new("r1", 1), 1001 + H), counted(true));
    }

    #[test]
    fn sweeps_bound_memory() {
        let mut index = DedupIndex::new(60, 0);
        for i in 0..10_000u32 {
            index.observe(Identity::new(&i.to_string(), 1), i);
        }
        assert!(index.len() <= 200, "{} entries kept", index.len());
        assert!(index.memory_bytes() < 10_000 * 8);
    }

    #[test]
    fn request_hashes_depend_on_a_per_process_seed() {
        let id = b"checkout-7f3a";
        assert_eq!(RequestHash::of(id), RequestHash::seeded(id, process_seed()));
        assert_eq!(RequestHash::of(id), RequestHash::of(id), "fixed within the process");
        assert_ne!(RequestHash::seeded(id, 1), RequestHash::seeded(id, 2));
    }

    #[test]
    fn entry_is_twenty_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 20);
    }

    /// The memory bound of the README: at most 48 bytes per remembered identity at any fill
    /// level from a thousand identities on (worst right after the table grows by half: 64
    /// bytes per three slots at 7/12 load, ~37 bytes; tiny tables have a minimum size).
    #[test]
    fn at_most_48_bytes_per_remembered_identity() {
        let mut index = DedupIndex::new(3600, DEFAULT_GRACE_SECS);
        let mut worst = 0.0f64;
        for i in 0..1_000_000u32 {
            index.observe(Identity::new(&format!("request-{i}"), 1), 1_000);
            if i >= 1_000 && (i % 997 == 0 || (i + 1).is_power_of_two() || i.is_power_of_two()) {
                worst = worst.max(index.memory_bytes() as f64 / index.len() as f64);
            }
        }
        assert!(worst <= 48.0, "{worst:.1} bytes per identity");
        assert_eq!(index.len(), 1_000_000);
    }

    /// Heap bytes per remembered identity at worst, over a stream of `seconds` whose rate
    /// cycles through `rates` every two minutes.
    fn worst_bytes_per_identity(horizon: u32, grace: u32, rates: [u32; 4], seconds: u32) -> f64 {
        let mut index = DedupIndex::new(horizon, grace);
        let mut worst = 0.0f64;
        let mut request = 0u32;
        for secs in 0..seconds {
            for _ in 0..rates[(secs / 120 % 4) as usize] {
                index.observe(Identity::new(&format!("request-{request}"), 1), secs);
                request += 1;
            }
            if index.len() >= 1_000 {
                worst = worst.max(index.memory_bytes() as f64 / index.len() as f64);
            }
        }
        worst
    }

    /// Steady streams with sweeps: a sweep empties a third of the table or more (short
    /// horizon), and the table must give that room back rather than keep the size of its
    /// busiest minute; with an hour's horizon the table is swept every 525 s of record time.
    #[test]
    fn at_most_48_bytes_per_remembered_identity_across_sweeps() {
        let short = worst_bytes_per_identity(60, 60, [500, 1_000, 1_500, 2_000], 1_800);
        assert!(short <= 48.0, "{short:.1} bytes per identity (60 s horizon)");
        let hour = worst_bytes_per_identity(3_600, DEFAULT_GRACE_SECS, [20, 40, 60, 80], 3 * 3_600);
        assert!(hour <= 48.0, "{hour:.1} bytes per identity (1 h horizon)");
    }

    /// A sweep that leaves the table just under 4/9 full (48 bytes per entry at 64 bytes per
    /// three slots) must give room back, or a long-running worker could stay just above 48.
    #[test]
    fn a_sweep_never_leaves_more_than_48_bytes_per_identity() {
        let slots = |index: &DedupIndex| index.memory_bytes() / 64 * 3;
        let mut probe = DedupIndex::new(60, 60);
        for i in 0..100_000u32 {
            probe.observe(Identity::new(&i.to_string(), 1), 0);
        }
        // Of the same 100,000 entries, keep 0.441 of the slots' worth past the sweep.
        let kept = slots(&probe) * 441 / 1000;
        let mut index = DedupIndex::new(60, 60);
        for i in 0..100_000u32 {
            let secs = if (i as usize) < 100_000 - kept { 0 } else { 100 };
            index.observe(Identity::new(&i.to_string(), 1), secs);
        }
        assert_eq!(slots(&index), slots(&probe));
        index.observe(Identity::new("sweeps", 1), 180);
        assert_eq!(index.len(), kept + 1);
        let bytes = index.memory_bytes() as f64 / index.len() as f64;
        assert!(bytes <= 48.0, "{bytes:.1} bytes per identity after the sweep");
    }

    /// With an hour's horizon and 600 s of grace an entry is kept 4,200 s and the table is
    /// swept every 525 s of record time, not every minute.
    #[test]
    fn sweeps_every_eighth_of_the_time_an_entry_is_kept() {
        let mut index = DedupIndex::new(3600, DEFAULT_GRACE_SECS);
        index.observe(Identity::new("old", 1), 0);
        index.observe(Identity::new("b", 1), 4_000); // Sweeps; "old" is still kept.
        index.observe(Identity::new("c", 1), 4_300); // "old" is dead, but no sweep yet.
        assert_eq!(index.len(), 3);
        index.observe(Identity::new("d", 1), 4_524);
        assert_eq!(index.len(), 4);
        index.observe(Identity::new("e", 1), 4_525); // 525 s after the last sweep.
        assert_eq!(index.len(), 4);
    }

    proptest! {
        /// Against a model that keeps every first copy forever: every copy within the horizon
        /// of its identity's first copy is a duplicate, and sweeping never changes a verdict.
        #[test]
        fn matches_a_naive_model(ops in proptest::collection::vec((0u8..20, 1u32..4, 0u32..200), 1..400)) {
            let horizon = 100;
            let mut index = DedupIndex::new(horizon, 50);
            let mut unswept = DedupIndex::new(horizon, u32::MAX / 4);
            let mut first_copy: HashMap<(u8, u32), u32> = HashMap::new();
            let mut clock = 0u32;
            for (request, attempt, step) in ops {
                clock += step % 7;
                let id = Identity::new(&format!("req-{request}"), attempt);
                let verdict = index.observe(id, clock);
                prop_assert_eq!(verdict, unswept.observe(id, clock));
                match first_copy.get(&(request, attempt)) {
                    Some(&first) if clock - first <= horizon => prop_assert_eq!(verdict, DedupVerdict::Duplicate),
                    _ => {}
                }
                if matches!(verdict, DedupVerdict::Counted { .. }) {
                    first_copy.insert((request, attempt), clock);
                }
            }
        }
    }
}
