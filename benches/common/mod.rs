//! What more than one bench needs: finding the server's listening port.

use std::net::SocketAddr;

/// The address 127.0.0.`last` the process listens on, from /proc/net/tcp.
pub fn listening_addr(pid: u32, last: u8) -> Option<SocketAddr> {
    let local = format!("{last:02X}00007F:");
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State 0A is LISTEN.
        if fields.get(3) == Some(&"0A")
            && fields.get(1).is_some_and(|addr| addr.starts_with(&local))
            && inodes.iter().any(|inode| Some(&inode.as_str()) == fields.get(9))
        {
            let port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
            return Some(([127, 0, 0, last], port).into());
        }
    }
    None
}
