//! The dedup index's table: its entries stored three to a 64-byte cache line.
//!
//! A table of remembered requests is larger than the caches, so each lookup misses. A
//! SwissTable misses twice (its control bytes, then the entry); here a request's home line holds
//! the entries themselves, so a lookup is one miss. Lines fill in order; a line that is full
//! passes inserts on to the next one and counts them (`overflow`, as in Folly's F14), so a
//! lookup stops at the first line that passed nothing on, and a removal gives those counts back:
//! no tombstones. The number of lines is any number (a request's home is found by a multiply,
//! not a mask), so the table grows by half instead of doubling: between 24 and 37 bytes per
//! entry.

/// One remembered request (see the module doc of `dedup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub request: [u32; 3],
    pub last_counted_secs: u32,
    pub attempts: u32,
}

const SLOTS: usize = 3;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line {
    entries: [Entry; SLOTS],
    /// Entries held, in `entries[..len]`.
    len: u8,
    _pad: u8,
    /// Entries whose home is this line or an earlier one and that live after it; sticky at
    /// `u16::MAX` (a lookup then only walks further than it needs to).
    overflow: u16,
}

const EMPTY: Line = Line {
    entries: [Entry { request: [0; 3], last_counted_secs: 0, attempts: 0 }; SLOTS],
    len: 0,
    _pad: 0,
    overflow: 0,
};

/// Where an entry sits: line and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position(usize, usize);

/// A set of [`Entry`]s keyed by their request.
pub(super) struct LineTable {
    lines: Vec<Line>,
    len: usize,
}

/// A table grows when an insert would fill more than 7/8 of its slots.
fn max_entries(lines: usize) -> usize {
    lines * SLOTS * 7 / 8
}

/// Lines that hold `entries` entries at 3/5 of their slots filled.
fn lines_for(entries: usize) -> usize {
    (entries * 5).div_ceil(SLOTS * 3)
}

/// The table's hash of a request (its hash bits are uniform already).
fn request_hash(request: &[u32; 3]) -> u64 {
    (u64::from(request[0]) << 32) | u64::from(request[1])
}

impl LineTable {
    /// Room for `entries` entries at 3/5 of the slots filled.
    pub fn with_capacity(entries: usize) -> LineTable {
        LineTable { lines: vec![EMPTY; lines_for(entries)], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn allocation_size(&self) -> usize {
        self.lines.capacity() * std::mem::size_of::<Line>()
    }

    fn home(&self, request: &[u32; 3]) -> usize {
        ((u128::from(request_hash(request)) * self.lines.len() as u128) >> 64) as usize
    }

    fn next(&self, line: usize) -> usize {
        if line + 1 == self.lines.len() {
            0
        } else {
            line + 1
        }
    }

    pub fn find(&self, request: &[u32; 3]) -> Option<Position> {
        if self.lines.is_empty() {
            return None;
        }
        let mut at = self.home(request);
        // Every line can have passed entries on (the walk wraps around), so at most one round.
        for _ in 0..self.lines.len() {
            let line = &self.lines[at];
            if let Some(slot) = line.entries[..usize::from(line.len)].iter().position(|e| e.request == *request) {
                return Some(Position(at, slot));
            }
            if line.overflow == 0 {
                return None;
            }
            at = self.next(at);
        }
        None
    }

    /// Asks the CPU to load the line a lookup of `request` starts at, so that the lookup, a
    /// little later, does not wait for memory.
    pub fn prefetch(&self, request: &[u32; 3]) {
        if let Some(line) = self.lines.get(self.home(request)) {
            prefetch_line(line);
        }
    }

    pub fn get_mut(&mut self, Position(line, slot): Position) -> &mut Entry {
        &mut self.lines[line].entries[slot]
    }

    /// Adds an entry whose request is not in the table.
    pub fn insert_new(&mut self, entry: Entry) {
        if self.len + 1 > max_entries(self.lines.len()) {
            self.resize((self.lines.len() * 3 / 2).max(self.lines.len() + 1));
        }
        let mut at = self.home(&entry.request);
        while usize::from(self.lines[at].len) == SLOTS {
            let line = &mut self.lines[at];
            line.overflow = line.overflow.saturating_add(1);
            at = self.next(at);
        }
        let line = &mut self.lines[at];
        line.entries[usize::from(line.len)] = entry;
        line.len += 1;
        self.len += 1;
    }

    /// Keeps the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        for at in 0..self.lines.len() {
            let mut slot = 0;
            while slot < usize::from(self.lines[at].len) {
                let entry = self.lines[at].entries[slot];
                if keep(&entry) {
                    slot += 1;
                    continue;
                }
                let line = &mut self.lines[at];
                line.len -= 1;
                line.entries[slot] = line.entries[usize::from(line.len)];
                self.len -= 1;
                let mut passed = self.home(&entry.request);
                while passed != at {
                    let line = &mut self.lines[passed];
                    if line.overflow != u16::MAX {
                        line.overflow -= 1;
                    }
                    passed = self.next(passed);
                }
            }
        }
    }

    /// Moves every entry into a table of `lines` lines.
    fn resize(&mut self, lines: usize) {
        let old = std::mem::replace(&mut self.lines, vec![EMPTY; lines.max(1)]);
        self.len = 0;
        for line in &old {
            for &entry in &line.entries[..usize::from(line.len)] {
                self.insert_new(entry);
            }
        }
    }

    /// Gives room back after removals: a table with under 4/9 of its slots used (over 48
    /// bytes per entry) is rebuilt at 3/5 filled.
    pub fn shrink_if_sparse(&mut self) {
        if self.len * 9 < self.lines.len() * SLOTS * 4 {
            self.resize(lines_for(self.len));
        }
    }

    #[cfg(test)]
    fn check_overflow_counts(&self) {
        let mut expected = vec![0u32; self.lines.len()];
        for (at, line) in self.lines.iter().enumerate() {
            for entry in &line.entries[..usize::from(line.len)] {
                let mut passed = self.home(&entry.request);
                while passed != at {
                    expected[passed] += 1;
                    passed = self.next(passed);
                }
            }
        }
        for (line, expected) in self.lines.iter().zip(expected) {
            assert!(line.overflow == u16::MAX || u32::from(line.overflow) == expected);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn prefetch_line(line: &Line) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint: it reads no data into the program and cannot fault, and
    // the address is a live reference; SSE, which the instruction needs, is part of x86-64.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(line).cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch_line(_line: &Line) {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(request: u32) -> Entry {
        let h = xxhash_rust::xxh3::xxh3_128(&request.to_le_bytes());
        Entry { request: [(h >> 96) as u32, (h >> 64) as u32, h as u32], last_counted_secs: request, attempts: 1 }
    }

    #[test]
    fn a_line_is_one_cache_line() {
        assert_eq!((std::mem::size_of::<Line>(), std::mem::align_of::<Line>()), (64, 64));
    }

    #[test]
    fn grows_by_half_and_finds_every_entry() {
        let mut table = LineTable::with_capacity(0);
        for request in 0..100_000 {
            table.insert_new(entry(request));
            let bytes = table.allocation_size() as f64 / table.len() as f64;
            assert!(request < 100 || bytes <= 37.0, "{bytes:.1} bytes per entry at {request}");
        }
        table.check_overflow_counts();
        for request in 0..100_000 {
            let at = table.find(&entry(request).request).expect("inserted");
            assert_eq!(table.get_mut(at).last_counted_secs, request);
        }
        assert_eq!(table.find(&entry(100_000).request), None);
    }

    #[test]
    fn a_lookup_ends_when_every_line_passed_entries_on() {
        let mut table = LineTable::with_capacity(4);
        assert_eq!(table.lines.len(), 3);
        let homed_at = |line: usize| {
            (0u32..).map(entry).filter(move |e| ((u128::from(request_hash(&e.request)) * 3) >> 64) as usize == line)
        };
        // Seven entries at home in line 0 fill lines 0 and 1 and one slot of line 2; the three
        // in line 0 go, so lines 0 and 1 still count entries passed on.
        let first: Vec<Entry> = homed_at(0).take(7).collect();
        first.iter().for_each(|&e| table.insert_new(e));
        let removed: Vec<u32> = first[..3].iter().map(|e| e.last_counted_secs).collect();
        table.retain(|e| !removed.contains(&e.last_counted_secs));
        // Three at home in line 2: two fill it, the third wraps around into line 0.
        homed_at(2).take(3).for_each(|e| table.insert_new(e));
        assert!(table.lines.iter().all(|line| line.overflow > 0));
        table.check_overflow_counts();
        assert_eq!(table.len(), 7);
        assert_eq!(table.find(&homed_at(1).next().expect("some request").request), None);
        assert!(first[3..].iter().all(|e| table.find(&e.request).is_some()));
    }

    proptest! {
        /// Inserts, removals and rebuilds in any order leave exactly the expected entries, each
        /// findable, and the overflow counts exact.
        #[test]
        fn matches_a_set(ops in proptest::collection::vec((0u32..300, 0u8..10), 1..600)) {
            let mut table = LineTable::with_capacity(4);
            let mut model = std::collections::BTreeSet::new();
            for (request, op) in ops {
                match op {
                    0 => {
                        table.retain(|e| e.last_counted_secs % 3 != request % 3);
                        model.retain(|r| r % 3 != request % 3);
                    }
                    1 => table.resize(lines_for(table.len())),
                    _ => {
                        if table.find(&entry(request).request).is_none() {
                            table.insert_new(entry(request));
                        }
                        model.insert(request);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            table.check_overflow_counts();
            for request in 0..300 {
                prop_assert_eq!(table.find(&entry(request).request).is_some(), model.contains(&request));
            }
        }
    }
}
