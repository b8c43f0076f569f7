//! The store of one hub: sled, embedded, behind [`Database`](warren_daemon::database::Database)
//! (which handles a full disk); durable once [`Kv::sync`] has flushed and fsynced.

use warren_daemon::database::Opened;

use super::{Batch, Kv, Order, Pairs};
use crate::inbox::InboxError;

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
        for (key, value) in batch {
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
