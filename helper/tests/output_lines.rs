//! Golden snapshots of the lines the helper writes: for a few representative events, the JSON
//! line and the text line exactly as `output::Output` writes them to stdout. The snapshots are
//! committed in `tests/snapshots/`; any change to what the helper says shows up as a diff of
//! those files, to be reviewed (`cargo insta review`) and committed with the change.
//!
//! A snapshot shows each written line through [`visible`], which spells out every character
//! that is not printable ASCII as `\u{..}`, the line feed as `\n` and the backslash as `\\`:
//! two outputs differ exactly when their snapshots do, and a snapshot file is plain ASCII, so
//! a raw escape or bidi override that reaches the output is seen in review, not obeyed.
//!
//! Under `CI=true` (or `INSTA_UPDATE=no`, as `.ci/run` sets) a mismatch or a missing snapshot
//! fails and nothing is written; elsewhere insta also writes a `.snap.new` beside the snapshot
//! for review, and the test fails all the same.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

use std::fmt::Write as _;

use conntrack_tray_helper::event::{
    AttributedBy, Connection, Direction, Event, Family, HostSource, Icmp, Process, Proto,
};
use conntrack_tray_helper::output::{Format, Output};
use conntrack_tray_helper::Config;

/// `s` with every character outside printable ASCII written out; see the module doc.
fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ' '..='~' => out.push(c),
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

/// What `Output` writes to stdout for `ev` in `format`.
fn written(format: Format, ev: &Event) -> String {
    let mut out = Output::new(format, Vec::new(), None, false, "host".into());
    out.emit(ev).expect("write to a Vec");
    out.flush().expect("flush a Vec");
    String::from_utf8(out.into_inner()).expect("output is UTF-8")
}

/// The snapshot text for one event: its JSON output, then its text output.
fn lines(ev: &Event) -> String {
    format!(
        "json: {}\ntext: {}\n",
        visible(&written(Format::Json, ev)),
        visible(&written(Format::Text, ev))
    )
}

fn process(comm: &str, exe: Option<&str>, cmdline: &[&str], user: Option<&str>) -> Process {
    Process {
        pid: 4242,
        comm: comm.into(),
        exe: exe.map(String::from),
        cmdline: cmdline.iter().map(|a| a.to_string()).collect(),
        uid: 1000,
        user: user.map(String::from),
        exe_verified: exe.is_some(),
        exe_unverified: exe
            .is_none()
            .then(|| "the executable could not be read".into()),
        exe_system: exe.is_some_and(|e| e.starts_with("/usr/")),
        ..Default::default()
    }
}

/// An outbound TCP connection over IPv4 to a critical port, with everything known.
fn outbound_tcp() -> Connection {
    Connection {
        ts: "2026-11-24T20:00:00.123456Z".into(),
        proto: Proto::Tcp,
        family: Family::Ipv4,
        direction: Direction::Outbound,
        local_ip: "10.0.0.1".parse().expect("ip"),
        local_port: Some(43210),
        remote_ip: "93.184.216.34".parse().expect("ip"),
        remote_port: Some(443),
        host: Some("example.com".into()),
        host_source: Some(HostSource::Dns),
        icmp: None,
        critical: true,
        ct_id: Some(7),
        zone: None,
        mark: Some(0),
        process: Some(process(
            "curl",
            Some("/usr/bin/curl"),
            &["curl", "https://example.com/"],
            Some("alice"),
        )),
        attributed_by: Some(AttributedBy::Connect),
        also_held_by: Vec::new(),
        also_held_by_more: 0,
        holders_incomplete: false,
    }
}

#[test]
fn a_connection_with_its_process() {
    let ev = Event::Connection(Box::new(outbound_tcp()));
    insta::assert_snapshot!("connection_with_process", lines(&ev));
}

#[test]
fn an_inbound_ipv6_connection_named_by_ptr_whose_user_and_exe_are_unknown() {
    let c = Connection {
        ts: "2026-11-24T20:00:01.000001Z".into(),
        proto: Proto::Udp,
        family: Family::Ipv6,
        direction: Direction::Inbound,
        local_ip: "2001:db8::1".parse().expect("ip"),
        local_port: Some(5353),
        remote_ip: "2001:db8:aaaa:bbbb:cccc:dddd:eeee:2".parse().expect("ip"),
        remote_port: Some(40000),
        host: Some("peer.example.test".into()),
        host_source: Some(HostSource::Ptr),
        icmp: None,
        critical: false,
        ct_id: Some(8),
        zone: Some(3),
        mark: None,
        process: Some(process("avahi-daemon", None, &[], None)),
        attributed_by: Some(AttributedBy::BoundSocket),
        also_held_by: Vec::new(),
        also_held_by_more: 0,
        holders_incomplete: false,
    };
    insta::assert_snapshot!(
        "connection_inbound_ipv6_ptr",
        lines(&Event::Connection(Box::new(c)))
    );
}

#[test]
fn a_connection_without_a_process() {
    // Forwarded ICMPv6 echo: no ports, no local process, nothing guessed.
    let c = Connection {
        ts: "2026-11-24T20:00:02.000000Z".into(),
        proto: Proto::Icmpv6,
        family: Family::Ipv6,
        direction: Direction::Forward,
        local_ip: "fd13:1::1".parse().expect("ip"),
        local_port: None,
        remote_ip: "fd13:1::2".parse().expect("ip"),
        remote_port: None,
        host: None,
        host_source: None,
        icmp: Some(Icmp {
            kind: 128,
            code: 0,
            id: 77,
        }),
        critical: false,
        ct_id: None,
        zone: None,
        mark: None,
        process: None,
        attributed_by: None,
        also_held_by: Vec::new(),
        also_held_by_more: 0,
        holders_incomplete: false,
    };
    insta::assert_snapshot!(
        "connection_without_process",
        lines(&Event::Connection(Box::new(c)))
    );
}

#[test]
fn a_hostile_process_stays_one_escaped_line() {
    // Everything a program chooses about itself: C0 controls (newline, carriage return, tab,
    // ESC sequences, BEL), DEL, a C1 CSI, the bidi overrides and isolates, a backslash, markup
    // and non-ASCII text; and a looked-up name with a terminal title sequence.
    let mut c = outbound_tcp();
    c.host = Some("evil\x1b]0;pwned\x07.test".into());
    c.process = Some(process(
        "a\nb\x1b[31m<i>",
        Some("/tmp/\u{202e}gpj.exe\r\tx\x7f"),
        &[
            "\u{9b}2J",
            "--name=\u{2066}admin\u{2069}",
            "back\\slash \"quoted\" ünïcode",
        ],
        Some("eve\u{202d}\n"),
    ));
    let ev = Event::Connection(Box::new(c));
    let json = written(Format::Json, &ev);
    let text = written(Format::Text, &ev);
    // One line each, whatever the names hold (the snapshot shows the rest).
    for out in [&json, &text] {
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'), "{out:?}");
        assert!(!out.contains('\r') && !out.contains('\x1b'), "{out:?}");
    }
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    insta::assert_snapshot!("connection_hostile_process", lines(&ev));
}

#[test]
fn lost_error_and_ack_lines() {
    let events = [
        Event::Lost {
            count: 40,
            reason: "kernel".into(),
        },
        Event::Lost {
            count: 1,
            reason: "queue".into(),
        },
        Event::Error {
            message: "bad command: \"\x1b[2J{\" is not JSON".into(),
        },
        Event::Ack {
            cmd: "config".into(),
        },
    ];
    let all: String = events.iter().map(lines).collect();
    insta::assert_snapshot!("lost_error_ack", all);
}

#[test]
fn the_hello_line_carries_the_default_config() {
    let ev = Event::Hello {
        version: "0.1.0".into(),
        hostname: "box\x1b[2J".into(),
        pid: 1234,
        config: Box::new(Config::default()),
    };
    insta::assert_snapshot!("hello", lines(&ev));
}
