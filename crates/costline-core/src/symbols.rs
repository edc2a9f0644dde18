//! Interned text of one batch.
//!
//! A batch sees the same few hundred endpoint tags, tenants, models and statuses over and over.
//! Each distinct string is stored once per batch, shared ([`Arc<str>`]) by the rollup keys and
//! named by a small id in the counted attempts' columns, so counting an event allocates nothing
//! for its dimensions and the batch's memory grows with its distinct strings, not with its
//! events. The table is dropped with its batch, so it never outlives a flush.

use std::sync::Arc;

use hashbrown::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Symbols {
    /// The id of `text`, stored on first use. Ids count from 0 in order of first use.
    pub fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.names.len() as u32;
        let shared: Arc<str> = Arc::from(text);
        self.names.push(Arc::clone(&shared));
        self.ids.insert(shared, id);
        id
    }

    /// The shared copy of `text`.
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        let id = self.id(text);
        Arc::clone(&self.names[id as usize])
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
        // One copy, held by the table (twice: by id and by name), `a` and `b`.
        assert_eq!(Arc::strong_count(&a), 4);
        assert_eq!((&*a, &*c), ("checkout.summary", "search.rerank"));
    }

    #[test]
    fn ids_name_their_text() {
        let mut symbols = Symbols::default();
        let ids: Vec<u32> = ["success", "429", "success", "", "429"].iter().map(|t| symbols.id(t)).collect();
        assert_eq!(ids, [0, 1, 0, 2, 1]);
        let names: Vec<&str> = symbols.names().iter().map(|n| &**n).collect();
        assert_eq!(names, ["success", "429", ""]);
    }
}
