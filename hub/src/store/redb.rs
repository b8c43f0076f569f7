//! The store of one hub: redb, embedded, behind [`Database`](warren_daemon::database::Database)
//! (which handles a full disk); what [`Kv::apply`] wrote is read at once, and durable once
//! [`Kv::sync`] has run.

use warren_daemon::database::Opened;
use warren_daemon::database::redb::{Records, Redb};

use super::{Batch, Kv, Order, Pairs};
use crate::inbox::InboxError;

/// Every redb error, as the inbox reports it.
fn failed(e: impl Into<redb::Error>) -> InboxError {
    InboxError::Database(e.into().into())
}

fn read(o: &Opened<Redb>) -> Result<Records, InboxError> {
    Ok(o.db.read()?)
}

/// Records in key order, as of when the range was taken.
type Span = redb::Range<'static, &'static [u8], &'static [u8]>;

/// The records with keys in `start..end` (`None`: to the last key), as of now.
fn span(o: &Opened<Redb>, start: &[u8], end: Option<&[u8]>) -> Result<Span, InboxError> {
    let records = read(o)?;
    match end {
        Some(end) => records.range(start..end),
        None => records.range(start..),
    }
    .map_err(failed)
}

impl Kv for Opened<Redb> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, InboxError> {
        let value = read(self)?.get(key).map_err(failed)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    // One read transaction for all of them.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, InboxError> {
        let records = read(self)?;
        keys.iter()
            .map(|k| {
                let value = records.get(k.as_slice()).map_err(failed)?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .collect()
    }

    fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Pairs, InboxError> {
        let range = span(self, start, end)?;
        let pair = |item: Result<_, redb::StorageError>| {
            let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) =
                item.map_err(failed)?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        };
        match order {
            Order::Forward => range.take(limit).map(pair).collect(),
            Order::Backward => range.rev().take(limit).map(pair).collect(),
        }
    }

    fn count(&self, start: &[u8], end: Option<&[u8]>) -> Result<u64, InboxError> {
        let mut n = 0;
        for item in span(self, start, end)? {
            item.map_err(failed)?;
            n += 1;
        }
        Ok(n)
    }

    fn next_id(&self) -> Result<u64, InboxError> {
        Ok(self.db.next_id())
    }

    fn apply(&self, batch: Batch) -> Result<(), InboxError> {
        Ok(self.db.write(batch)?)
    }

    fn sync(&self) -> Result<(), InboxError> {
        Ok(Opened::sync(self)?)
    }
}
