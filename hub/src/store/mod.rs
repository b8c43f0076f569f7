//! What the inbox keeps its records in: ordered byte keys, read by key or in ranges, written
//! in batches that land whole or not at all.
//!
//! The inbox's logic (dedup, outbox, dead letters, traces) is written once against [`Kv`]:
//! [`redb`] implements it for the one hub on a home server (embedded, the default);
//! [`postgres`] inside one of PostgreSQL's transactions, for hubs that share a store.

pub mod from_sled;
pub mod postgres;
mod redb;

use crate::inbox::InboxError;

/// Records `(key, value)`.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes that land together or not at all, in the order given.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl IntoIterator for Batch {
    type Item = (Vec<u8>, Option<Vec<u8>>);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    /// Each write: `(key, Some(value))` to set, `(key, None)` to remove.
    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

impl FromIterator<(Vec<u8>, Option<Vec<u8>>)> for Batch {
    /// Each write: `(key, Some(value))` to set, `(key, None)` to remove.
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>>(ops: I) -> Self {
        Self {
            ops: ops.into_iter().collect(),
        }
    }
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Which way [`Kv::range`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// From the first key on.
    Forward,
    /// From the last key back.
    Backward,
}

/// An ordered key-value store, as one transaction sees it.
pub trait Kv {
    /// The value of `key`.
    ///
    /// # Errors
    /// When the store fails.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError>;

    /// The value of `key`; if it has none, `value` is written at once. In a store other hubs
    /// share, a hub doing the same meanwhile waits for this transaction to end and then finds
    /// the value: of two hubs recording one event id, one records it and the other finds it.
    ///
    /// # Errors
    /// When the store fails.
    fn get_or_insert(&self, key: &[u8], _value: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        // One writer at a time: the caller's batch writes it.
        self.get(key)
    }

    /// [`Kv::get`] of each of `keys`, in one round trip where the store is remote.
    ///
    /// # Errors
    /// When the store fails.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, InboxError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// [`Kv::get_or_insert`] of each of `keys` (distinct), with one `value`, in one round
    /// trip where the store is remote.
    ///
    /// # Errors
    /// When the store fails.
    fn get_or_insert_many(
        &self,
        keys: &[Vec<u8>],
        value: &[u8],
    ) -> Result<Vec<Option<Vec<u8>>>, InboxError> {
        keys.iter().map(|k| self.get_or_insert(k, value)).collect()
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// When the store fails.
    fn contains_key(&self, key: &[u8]) -> Result<bool, InboxError> {
        Ok(self.get(key)?.is_some())
    }

    /// At most `limit` records with keys in `start..end` (`None`: to the last key), in
    /// `order`.
    ///
    /// # Errors
    /// When the store fails.
    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Pairs, InboxError>;

    /// The keys in `start..end`, in key order.
    ///
    /// # Errors
    /// When the store fails.
    fn keys(&self, start: &[u8], end: Option<&[u8]>) -> Result<Vec<Vec<u8>>, InboxError> {
        let pairs = self.range(start, end, Order::Forward, usize::MAX)?;
        Ok(pairs.into_iter().map(|(k, _)| k).collect())
    }

    /// How many keys are in `start..end`.
    ///
    /// # Errors
    /// When the store fails.
    fn count(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, InboxError>;

    /// A number larger than any this store gave before, crash or not.
    ///
    /// # Errors
    /// When the store fails.
    fn next_id(&self) -> Result<u64, InboxError>;

    /// Applies `batch` atomically.
    ///
    /// # Errors
    /// When the store fails: nothing of it was applied.
    fn apply(&self, batch: Batch) -> Result<(), InboxError>;

    /// Keeps `key` (an outbox entry) claimed by this hub for `ms` more: a delivery waiting
    /// to be retried is not taken over by another hub before then. One hub alone claims
    /// nothing.
    ///
    /// # Errors
    /// When the store fails.
    fn hold(&self, _key: &[u8], _ms: u64) -> Result<(), InboxError> {
        Ok(())
    }

    /// Whether `key` (an outbox entry) is still claimed by this hub, locked until the
    /// transaction ends: a delivery another hub took over (this hub's claim ran out) is that
    /// hub's to record. One hub alone always holds what it has.
    ///
    /// # Errors
    /// When the store fails.
    fn holds(&self, _key: &[u8]) -> Result<bool, InboxError> {
        Ok(true)
    }

    /// Makes everything applied so far durable.
    ///
    /// # Errors
    /// When the store fails.
    fn sync(&self) -> Result<(), InboxError>;

    /// Every record whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// When the store fails.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, InboxError> {
        self.range(
            prefix,
            prefix_end(prefix).as_deref(),
            Order::Forward,
            usize::MAX,
        )
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_key_that_does_not_share_it() {
        assert_eq!(prefix_end(b"o"), Some(b"p".to_vec()));
        assert_eq!(prefix_end(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
