//! Test doubles for the helper's wire types, one per kind: a test states only the fields it
//! is about, and a field added to [`Connection`] or [`Process`] is added here once instead of
//! in every module's tests.

use conntrack_tray_helper::event::{Direction, Family, Proto};
use conntrack_tray_helper::{Connection, Process};

/// An outbound TCP connection from 10.0.0.1:43210 to `remote`:`port` on 2026-11-25, not to a
/// critical port, with no process (override `process` with [`process`]) and no looked-up
/// name.
pub fn connection(remote: &str, port: u16) -> Connection {
    Connection {
        ts: "2026-11-25T10:00:00.000000Z".into(),
        proto: Proto::Tcp,
        family: Family::Ipv4,
        direction: Direction::Outbound,
        local_ip: "10.0.0.1".parse().expect("fixture address"),
        local_port: Some(43210),
        remote_ip: remote.parse().expect("fixture address"),
        remote_port: Some(port),
        host: None,
        host_source: None,
        icmp: None,
        critical: false,
        ct_id: None,
        zone: None,
        mark: None,
        process: None,
        attributed_by: None,
        also_held_by: Vec::new(),
        also_held_by_more: 0,
        holders_incomplete: false,
    }
}

/// The process running `exe`: `comm` is its file name, pid 4242, user alice (uid 1000), no
/// arguments; the helper verified the exe and found it a system file (as for /usr/bin/curl).
pub fn process(exe: &str) -> Process {
    Process {
        pid: 4242,
        comm: exe.rsplit('/').next().unwrap_or(exe).into(),
        exe: Some(exe.into()),
        cmdline: vec![],
        uid: 1000,
        user: Some("alice".into()),
        exe_verified: true,
        exe_unverified: None,
        exe_system: true,
        ..Default::default()
    }
}
