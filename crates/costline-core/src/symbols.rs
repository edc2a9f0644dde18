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

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Ids, found by the hash of their name.
    ids: HashTable<u32>,
    names: Vec<Arc<str>>,
    hasher: DefaultHashBuilder,
}

impl Symbols {
    /// The id of `text`, stored on first use. Ids count from 0 in order of first use.
    pub fn id(&mut self, text: &str) -> u32 {
        let hash = self.hasher.hash_one(text);
        let names = &self.names;
        if let Some(&id) = self.ids.find(hash, |&id| same_text(&names[id as usize], text)) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(Arc::from(text));
        let (names, hasher) = (&self.names, &self.hasher);
        self.ids.insert_unique(hash, id, |&id| hasher.hash_one(&*names[id as usize]));
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

/// `a == b`, compared in line: the strings compared on the hot path (statuses, tags, model
/// names) are a few bytes long, where a call to `memcmp` costs more than the comparison.
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    // A fold without early exit, so that it runs over whole vectors (and is not turned back
    // into a call).
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
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
    fn same_text_compares_every_byte() {
        let base = "checkout.ai_summary_v12";
        assert!(same_text(base, &String::from(base)));
        assert!(!same_text(base, "checkout.ai_summary_v1"));
        // A difference at every position, first, last and between.
        for at in 0..base.len() {
            let mut other = base.as_bytes().to_vec();
            other[at] ^= 1;
            assert!(!same_text(base, std::str::from_utf8(&other).unwrap()), "difference at {at}");
        }
        assert!(same_text("", ""));
    }
}
