//! Which process holds which TCP listener, from Linux's /proc: the hub makes sure rumqttd's
//! port is its own before it sends a login there, and tests find a daemon's ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Every IPv4 TCP socket in LISTEN state, with its socket inode.
pub fn tcp_listeners() -> Vec<(SocketAddrV4, String)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            // The address is the in-memory u32, printed in hex: little-endian on x86 and ARM.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((SocketAddrV4::new(ip, port), (*f.get(9)?).to_owned()))
        })
        .collect()
}

/// The inodes of the sockets process `pid` (or `"self"`) has open.
pub fn socket_inodes(pid: &str) -> BTreeSet<String> {
    socket_fds(pid).into_keys().collect()
}

/// The sockets process `pid` (or `"self"`) has open: inode → file descriptor.
pub fn socket_fds(pid: &str) -> BTreeMap<String, i32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeMap::new();
    };
    fds.filter_map(|e| {
        let e = e.ok()?;
        let fd = e.file_name().to_str()?.parse().ok()?;
        let link = std::fs::read_link(e.path()).ok()?;
        let inode = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .to_owned();
        Some((inode, fd))
    })
    .collect()
}
