//! What the inbox keeps its records in: ordered byte keys, read by key or in ranges, written
//! in batches that land whole or not at all.
//!
//! The inbox's logic (dedup, outbox, dead letters, traces) is written once against [`Kv`];
//! sled implements it here, for the one hub on a home server. A store shared by several hubs
//! implements the same inside one of its transactions.

use warren_daemon::database::Opened;

use crate::inbox::InboxError;

/// Records `(key, value)`.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes that land together or not at all, in the order given.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
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

impl Kv for Opened {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn contains_key(&self, key: &[u8]) -> Result<bool, InboxError> {
        Ok(self.db.contains_key(key)?)
    }

    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Pairs, InboxError> {
        let range = match end {
            Some(end) => self.db.range(start..end),
            None => self.db.range(start..),
        };
        let pairs = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(InboxError::from)
        };
        match order {
            Order::Forward => range.take(limit).map(pairs).collect(),
            Order::Backward => range.rev().take(limit).map(pairs).collect(),
        }
    }

    fn count(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, InboxError> {
        let keys = match end {
            Some(end) => self.db.range(start..end),
            None => self.db.range(start..),
        };
        let mut n = 0;
        for key in keys.keys() {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn next_id(&self) -> Result<u64, InboxError> {
        Ok(self.db.generate_id()?)
    }

    fn apply(&self, batch: Batch) -> Result<(), InboxError> {
        let mut b = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        Ok(self.db.apply_batch(b)?)
    }

    fn sync(&self) -> Result<(), InboxError> {
        Ok(Opened::sync(self)?)
    }
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
