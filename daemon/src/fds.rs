//! Open files: the soft limit raised to the hard one at start, and how many are open now.
//!
//! Each edge costs the hub three descriptors (its TLS socket, the front's loopback link to the
//! embedded broker, and the broker's end of it), so the usual soft limit of 1024 caps a hub
//! at about 300 edges, while the hard limit (often 2^19 or more) is there for the asking.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, "Could not raise the open-files limit to the hard limit.");
        }
    }
    limit()
}

/// The soft limit on open files (`None`: unlimited).
pub fn limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// How many files this process has open (Linux; `None` elsewhere).
pub fn open() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    // Tests share the process: the soft limit is lowered by one, not to a figure that could
    // starve a test opening files beside this one.
    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
        let hard = maximum.expect("Linux caps the open-files limit");
        let lowered = Rlimit {
            current: Some(hard - 1),
            maximum,
        };
        setrlimit(Resource::Nofile, lowered).expect("lower the soft limit");
        assert_eq!(limit(), Some(hard - 1));
        assert_eq!(raise_limit(), Some(hard));
        assert_eq!(limit(), Some(hard));
    }

    // Other tests open and close files meanwhile, so only the ones held here are certain.
    #[test]
    fn counts_the_files_held_open() {
        let files: Vec<_> = (0..32).map(|_| tempfile::tempfile().unwrap()).collect();
        assert!(open().unwrap() >= files.len() as u64);
    }
}
