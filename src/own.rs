//! The applet's own traffic: the ssh connections it opens to the hosts it watches. They are
//! not news (a notification about them each reconnect would teach the person to ignore
//! notifications); they stay in the history, marked.
//!
//! On this machine they are the connections of the ssh processes the applet started (by
//! pid). On the watched host they are the connections between sshd's port and one of those
//! ssh processes' sockets: both ports must match, the far end's (the local port here) and
//! the near end's (the sshd port), since a program on the watched host that learnt the
//! link's port here (`ss` shows it to anyone there) could otherwise connect to that port
//! anywhere and go unreported; the sshd port it cannot bind. `/proc/PID/fd` names the socket
//! inodes, `/proc/net/tcp` and `tcp6` their ports.

use std::collections::HashSet;
use std::path::Path;

/// The (local, remote) TCP ports of the sockets the processes `pids` hold.
pub fn local_ports(pids: &[u32]) -> HashSet<(u16, u16)> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .as_deref()
                .and_then(socket_inode)
            {
                inodes.insert(inode);
            }
        }
    }
    if inodes.is_empty() {
        return HashSet::new();
    }
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|table| ports_of(&table, &inodes))
        .collect()
}

/// `socket:[123]` → 123.
fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The (local, remote) ports of the rows of a `/proc/net/tcp` table whose inode is in
/// `inodes`.
fn ports_of(table: &str, inodes: &HashSet<u64>) -> Vec<(u16, u16)> {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            let port = |i: usize| u16::from_str_radix(f.get(i)?.rsplit(':').next()?, 16).ok();
            Some((port(1)?, port(2)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_of_the_sockets_held_are_read_from_the_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n\
   1: 0A00000A:D431 0A00000B:08AE 01 00000000:00000000 02:000A3A5C 00000000  1000        0 777 2 0000000000000000 20 4 30 10 -1\n";
        let inodes = HashSet::from([777]);
        assert_eq!(ports_of(table, &inodes), vec![(0xD431, 0x08AE)]);
        assert_eq!(socket_inode(Path::new("socket:[777]")), Some(777));
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
    }

    #[test]
    fn this_process_finds_the_port_of_its_own_connection() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
        let port = client.local_addr().expect("addr").port();
        let peer = client.peer_addr().expect("addr").port();
        assert!(local_ports(&[std::process::id()]).contains(&(port, peer)));
    }
}
