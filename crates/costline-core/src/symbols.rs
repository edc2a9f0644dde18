//! Interned text of one batch.
//!
//! A batch sees the same few hundred endpoint tags, tenants, models and statuses over and over.
//! Each distinct string is stored once per batch and named by a small id in the rollup keys and
//! the counted attempts' columns, so counting an event allocates nothing for its dimensions and
//! the batch's memory grows with its distinct strings, not with its events. The names are
//! [`Arc<str>`] so that the rows written from a batch share them. The table is dropped with its
//! batch, so it never outlives a flush.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

/// How many streams of strings a [`Symbols`] remembers the last id of ([`Symbols::id_in`]).
pub const RECENT_SLOTS: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Ids, found by the hash of their name.
    ids: HashTable<u32>,
    names: Vec<Arc<str>>,
    hasher: NameHasher,
    /// The id each slot got last.
    recent: [u32; RECENT_SLOTS],
}

impl Symbols {
    /// The id of `text`, stored on first use. Ids count from 0 in order of first use.
    pub fn id(&mut self, text: &str) -> u32 {
        let hash = self.hasher.hash(text);
        let names = &self.names;
        if let Some(&id) = self.ids.find(hash, |&id| same_text(&names[id as usize], text)) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(Arc::from(text));
        let (names, hasher) = (&self.names, &self.hasher);
        self.ids.insert_unique(hash, id, |&id| hasher.hash(&names[id as usize]));
        id
    }

    /// [`Symbols::id`], trying first the id that `slot` got last. A slot is one stream of
    /// strings (one dimension, the status): most events repeat the status, error code or
    /// environment of the event before, and one comparison then saves a hash and a probe.
    /// Slots are the caller's to number, below [`RECENT_SLOTS`].
    pub fn id_in(&mut self, slot: usize, text: &str) -> u32 {
        let slot = slot % RECENT_SLOTS;
        let recent = self.recent[slot];
        if self.names.get(recent as usize).is_some_and(|name| same_text(name, text)) {
            return recent;
        }
        let id = self.id(text);
        self.recent[slot] = id;
        id
    }

    /// Every string, at the index of its id.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Every string, at the index of its id.
    pub fn into_names(self) -> Vec<Arc<str>> {
        self.names
    }
}

/// Hashes names. Those up to 16 bytes (nearly all: statuses, tenants, models, most tags) are
/// hashed in line, as foldhash hashes them but without the `Hasher` calls around it: their
/// bytes as two (overlapping) words, mixed with a random seed by one folded multiply. Longer
/// ones go through foldhash.
#[derive(Debug, Clone)]
struct NameHasher {
    long: DefaultHashBuilder,
    seed: [u64; 2],
}

impl Default for NameHasher {
    fn default() -> NameHasher {
        let long = DefaultHashBuilder::default();
        let seed = [long.hash_one(1u64), long.hash_one(2u64)];
        NameHasher { long, seed }
    }
}

impl NameHasher {
    #[inline(always)]
    fn hash(&self, text: &str) -> u64 {
        let (bytes, n) = (text.as_bytes(), text.len());
        let word = |at| word_at(bytes, at).unwrap_or(0);
        let half = |at| half_at(bytes, at).map_or(0, u64::from);
        let byte = |at: usize| bytes.get(at).map_or(0, |&b| u64::from(b));
        let (x, y) = match n {
            0..4 => (byte(0) << 16 | byte(n / 2) << 8 | byte(n.wrapping_sub(1)), 0),
            4..8 => (half(0), half(n - 4)),
            8..=16 => (word(0), word(n - 8)),
            _ => return self.long.hash_one(text),
        };
        let product = u128::from(x ^ self.seed[0]) * u128::from(y ^ self.seed[1] ^ n as u64);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

/// `a == b`, compared in line: the strings compared on the hot path (statuses, tags, model
/// names) are a few bytes long, where a call to `memcmp` costs more than the comparison. Up
/// to 32 bytes, two to four (overlapping) words compare them whatever their length.
#[inline(always)]
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_text`] for bytes.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        // Bytes first, middle and last: all of them (`==` on slices would call `memcmp`).
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => half_at(a, 0) == half_at(b, 0) && half_at(a, n - 4) == half_at(b, n - 4),
        8..=16 => word_at(a, 0) == word_at(b, 0) && word_at(a, n - 8) == word_at(b, n - 8),
        17..=32 => {
            let same_at = |at| word_at(a, at) == word_at(b, at);
            same_at(0) && same_at(8) && same_at(n - 16) && same_at(n - 8)
        }
        // A fold without early exit, so that it runs over whole vectors.
        _ => a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0,
    }
}

/// The eight bytes from `at`, as one word; `None` past the end.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..).and_then(|s| s.first_chunk::<8>()).map(|w| u64::from_ne_bytes(*w))
}

/// The four bytes from `at`, as one word; `None` past the end.
#[inline(always)]
fn half_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..).and_then(|s| s.first_chunk::<4>()).map(|w| u32::from_ne_bytes(*w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_text() {
        let mut symbols = Symbols::default();
        let ids: Vec<u32> = ["success", "429", "success", "", "429"].iter().map(|t| symbols.id(t)).collect();
        assert_eq!(ids, [0, 1, 0, 2, 1]);
        let names: Vec<&str> = symbols.names().iter().map(|n| &**n).collect();
        assert_eq!(names, ["success", "429", ""]);
    }

    #[test]
    fn names_hash_by_every_byte() {
        let hasher = NameHasher::default();
        let text = "checkout.ai_summary_v12-onboarding";
        let mut hashes = std::collections::HashSet::new();
        for len in 0..=text.len() {
            let base = &text[..len];
            assert_eq!(hasher.hash(base), hasher.hash(&String::from(base)));
            assert!(hashes.insert(hasher.hash(base)), "{base:?} collides with a prefix");
            for at in 0..len {
                let mut other = base.as_bytes().to_vec();
                other[at] ^= 1;
                let other = std::str::from_utf8(&other).unwrap();
                assert_ne!(hasher.hash(base), hasher.hash(other), "{base:?}: byte {at} not hashed");
            }
        }
    }

    #[test]
    fn slots_give_the_ids_of_the_table() {
        let mut symbols = Symbols::default();
        let texts = ["success", "success", "429", "", "success", "429", "429", "timeout", ""];
        let mut plain = Symbols::default();
        for (i, text) in texts.iter().enumerate() {
            // Two slots seeing the stream in turn, and a third that sees every string.
            let id = symbols.id_in(i % 2, text);
            assert_eq!(symbols.id_in(2, text), id, "{text}");
            assert_eq!(id, plain.id(text), "{text}");
        }
        assert_eq!(symbols.names(), plain.names());
    }

    #[test]
    fn same_text_compares_every_byte() {
        // Every length up to past the longest word-wise case, each with a difference at every
        // position: first, last and between.
        let text = "checkout.ai_summary_v12-onboarding.welcome_email";
        for len in 0..=text.len() {
            let base = &text[..len];
            assert!(same_text(base, &String::from(base)), "{base}");
            assert!(len == 0 || !same_text(base, &text[..len - 1]), "{base}");
            for at in 0..len {
                let mut other = base.as_bytes().to_vec();
                other[at] ^= 1;
                assert!(!same_text(base, std::str::from_utf8(&other).unwrap()), "{base}: difference at {at}");
            }
        }
    }
}
