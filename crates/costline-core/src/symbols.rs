//! Interned text of one batch.
//!
//! A batch sees the same few hundred endpoint tags, tenants, models and statuses over and over.
//! Each distinct string is stored once per batch and shared ([`Arc<str>`]), so counting an event
//! allocates only for its request id, and the batch's memory grows with its distinct strings, not
//! with its events. The table is dropped with its batch, so it never outlives a flush.

use std::sync::Arc;

use hashbrown::HashSet;

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    known: HashSet<Arc<str>>,
}

impl Symbols {
    /// The shared copy of `text`.
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        Arc::clone(self.known.get_or_insert_with(text, |text| Arc::from(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_is_stored_once() {
        let mut symbols = Symbols::default();
        let a = symbols.intern("checkout.summary");
        let b = symbols.intern(&String::from("checkout.summary"));
        let c = symbols.intern("search.rerank");
        assert!(Arc::ptr_eq(&a, &b));
        // One copy, held by the table, `a` and `b`.
        assert_eq!(Arc::strong_count(&a), 3);
        assert_eq!((&*a, &*c), ("checkout.summary", "search.rerank"));
    }
}
