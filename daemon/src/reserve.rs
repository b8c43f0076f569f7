//! Room kept for a full disk: a file of allocated space in a database's directory, given back
//! when writes fail for want of space.
//!
//! sled poisons a database on a failed write and needs room to start again (a snapshot, a
//! fresh segment), and even deleting an event is a write. So a daemon whose filesystem fills
//! would stop and could not restart on that disk — no new events, but also no way to forward
//! the ones it holds. With a reserve it gives back space an eighth at a time, each time a
//! write fails (while the disk first fills, at a restart on a still-full disk, while it
//! deletes what it forwarded), so each need takes only about what it needs and some is left
//! for the next; it keeps serving what it holds, and fills the reserve again when the
//! filesystem has room.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The least a step gives back: room for sled to write a segment or two.
pub const MIN_STEP: u64 = 256 << 10;

/// Space kept in one file.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    /// A reserve of `size` bytes at `path` (nothing is allocated until [`Reserve::fill`]).
    pub fn new(path: PathBuf, size: u64) -> Self {
        Self { path, size }
    }

    /// Where the reserve lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes it holds when full.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the reserve holds now: allocated, not merely its length (a sparse file holds
    /// nothing).
    pub fn held(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).map_or(0, |m| m.len().min(m.blocks().saturating_mul(512)))
    }

    /// Allocates the whole reserve. `Ok(false)` when the filesystem has no room for it: the
    /// file is then left as it was, so a failed attempt takes none of the space left.
    ///
    /// # Errors
    /// When the file cannot be created or allocated for any other reason.
    pub fn fill(&self) -> io::Result<bool> {
        let held = self.held();
        if held >= self.size {
            return Ok(true);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        match allocate(&mut file, held, self.size) {
            Ok(()) => {
                file.sync_all()?;
                Ok(true)
            }
            Err(e) if is_storage_full(&e) => {
                file.set_len(held)?;
                if held == 0 {
                    drop(file);
                    let _ = std::fs::remove_file(&self.path);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives back one step: an eighth of the reserve (at least [`MIN_STEP`]), or what is left.
    /// Returns the bytes freed (0 when nothing was left).
    ///
    /// # Errors
    /// When the file cannot be shrunk or removed.
    pub fn release(&self) -> io::Result<u64> {
        let held = self.held();
        let step = (self.size / 8).max(MIN_STEP);
        if held > step {
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len(held - step)?;
            return Ok(step);
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(held),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Whether `e` says the filesystem (or the user's quota) is out of space.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Allocates bytes `from..to` of `file`: `fallocate` where the filesystem has it, else written
/// out (with bytes compression cannot shrink, since ZFS and btrfs compress zeros to nothing).
fn allocate(file: &mut File, from: u64, to: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(&*file, FallocateFlags::empty(), from, to - from) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::INVAL => {}
            Err(e) => return Err(e.into()),
        }
    }
    write_out(file, from, to)
}

/// Allocates bytes `from..to` of `file` by writing them.
fn write_out(file: &mut File, from: u64, to: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(from))?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut left = to - from;
    while left > 0 {
        for b in chunk.chunks_mut(8) {
            // xorshift64: cheap bytes with no pattern for a compressor to find.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
        }
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_then_gives_back_a_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reserve::new(dir.path().join("reserve"), 4 << 20);
        assert_eq!(r.held(), 0);
        assert!(r.fill().unwrap());
        assert_eq!(r.held(), 4 << 20);
        assert!(r.fill().unwrap(), "a full reserve stays as it is");
        for left in (0..8).rev() {
            assert_eq!(r.release().unwrap(), 512 << 10, "an eighth");
            assert_eq!(r.held(), left * (512 << 10));
        }
        assert!(!r.path().exists());
        assert_eq!(r.release().unwrap(), 0, "nothing left to give");
        assert!(r.fill().unwrap());
        assert_eq!(r.held(), 4 << 20, "filled again");
        let small = Reserve::new(dir.path().join("small"), 300 << 10);
        assert!(small.fill().unwrap());
        assert_eq!(
            small.release().unwrap(),
            MIN_STEP,
            "at least the least step"
        );
        assert_eq!(
            small.release().unwrap(),
            (300 << 10) - MIN_STEP,
            "then what is left"
        );
    }

    #[test]
    fn storage_full_kinds() {
        assert!(is_storage_full(&io::Error::from_raw_os_error(28))); // ENOSPC
        assert!(is_storage_full(&io::Error::from_raw_os_error(122))); // EDQUOT
        assert!(!is_storage_full(&io::Error::from_raw_os_error(5))); // EIO
    }

    #[test]
    fn written_out_where_fallocate_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = File::create(dir.path().join("f")).unwrap();
        write_out(&mut f, 0, 100_000).unwrap();
        write_out(&mut f, 100_000, 150_001).unwrap();
        let bytes = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(bytes.len(), 150_001);
        assert!(
            bytes.iter().filter(|b| **b == 0).count() < 2_000,
            "not zeros"
        );
    }
}
