//! Writers for the helper's output: JSON lines, human text lines, the log file and `wall`-style
//! broadcasts to terminals.
//!
//! Every string in an event may come from a hostile program (its name, its command line).
//! Every line goes through the one sanitizer ([`crate::sanitize`]): JSON carries each control
//! and format character as a `\uXXXX` escape, so an event stays one line and a terminal that
//! shows the stream raw sees no escape sequence; text lines escape them visibly, so a name
//! cannot end a line, move the cursor, recolour a terminal or reverse the text around it.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::event::{Connection, Event};
use crate::sanitize::escape as sanitize;

/// Output format of the helper's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

/// One human line for an event (no trailing newline).
pub fn text_line(ev: &Event) -> String {
    match ev {
        Event::Connection(c) => connection_line(c),
        Event::Hello {
            version,
            hostname,
            config,
            ..
        } => {
            let protos: Vec<String> = config
                .monitor
                .protocols
                .iter()
                .map(|p| p.to_string())
                .collect();
            let dirs: Vec<String> = config
                .monitor
                .directions
                .iter()
                .map(|d| d.to_string())
                .collect();
            format!(
                "conntrack-tray-helper {} on {}: watching {} ({})",
                sanitize(version),
                sanitize(hostname),
                protos.join(","),
                dirs.join(",")
            )
        }
        Event::Lost { count, reason } => format!("LOST {count} events ({})", sanitize(reason)),
        Event::Error { message } => format!("ERROR {}", sanitize(message)),
        Event::Ack { cmd } => format!("ok {}", sanitize(cmd)),
    }
}

/// `ip:port`, with IPv6 addresses in brackets; the bare address for protocols without ports.
pub fn endpoint(ip: &std::net::IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (std::net::IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (ip, Some(p)) => format!("{ip}:{p}"),
        (ip, None) => ip.to_string(),
    }
}

fn connection_line(c: &Connection) -> String {
    let mut line = format!(
        "{} {} {} {} {} {}",
        c.ts,
        if c.critical { "!" } else { " " },
        c.proto,
        endpoint(&c.local_ip, c.local_port),
        match c.direction {
            crate::event::Direction::Inbound => "<-",
            _ => "->",
        },
        endpoint(&c.remote_ip, c.remote_port),
    );
    if let Some(host) = &c.host {
        let ptr = if c.host_source == Some(crate::event::HostSource::Ptr) {
            "ptr "
        } else {
            ""
        };
        let _ = write!(line, " ({ptr}{})", sanitize(host));
    }
    if let Some(icmp) = c.icmp {
        let _ = write!(line, " type {} code {}", icmp.kind, icmp.code);
    }
    match &c.process {
        Some(p) => {
            let _ = write!(line, " {}[{}]", sanitize(&p.comm), p.pid);
            if let Some(exe) = &p.exe {
                let _ = write!(line, " {}", sanitize(exe));
            }
            match &p.user {
                Some(u) => {
                    let _ = write!(line, " user {}", sanitize(u));
                }
                None => {
                    let _ = write!(line, " uid {}", p.uid);
                }
            }
        }
        None => line.push_str(" [unknown process]"),
    }
    if !c.also_held_by.is_empty() {
        let others: Vec<String> = c
            .also_held_by
            .iter()
            .map(|p| format!("{}[{}]", sanitize(&p.comm), p.pid))
            .collect();
        let _ = write!(line, " also held by {}", others.join(", "));
        if c.also_held_by_more > 0 {
            let _ = write!(line, " and {} more", c.also_held_by_more);
        }
    }
    if c.holders_incomplete {
        line.push_str(" [other holders unchecked]");
    }
    if c.critical {
        line.push_str(" [critical]");
    }
    if c.direction == crate::event::Direction::Forward {
        line.push_str(" [forward]");
    }
    line
}

/// Where reported events go: stdout in the chosen format, plus optionally a log file (text)
/// and broadcasts to logged-in terminals.
pub struct Output<W: Write> {
    format: Format,
    out: W,
    log: Option<File>,
    broadcast: bool,
    hostname: String,
    /// The line being written, kept between events so a burst does not allocate one each.
    line: Vec<u8>,
}

impl<W: Write> Output<W> {
    pub fn new(
        format: Format,
        out: W,
        log: Option<File>,
        broadcast: bool,
        hostname: String,
    ) -> Self {
        Output {
            format,
            out,
            log,
            broadcast,
            hostname,
            line: Vec::new(),
        }
    }

    /// Writes one event. The caller flushes (see [`Output::flush`]) when nothing more is
    /// queued, so a reader sees each line at once and a burst costs one write per batch.
    /// An error here is stdout's (a closed pipe): the caller ends the helper.
    pub fn emit(&mut self, ev: &Event) -> io::Result<()> {
        match self.format {
            Format::Json => {
                self.line.clear();
                serde_json::to_writer(&mut self.line, ev)?;
                // serde_json writes UTF-8 only.
                let line = std::str::from_utf8(&self.line).map_err(io::Error::other)?;
                self.out
                    .write_all(crate::sanitize::json_line(line).as_bytes())?;
                self.out.write_all(b"\n")?;
                // One very long line (a 1 MB configuration in a hello) is not kept.
                if self.line.capacity() > 64 << 10 {
                    self.line = Vec::new();
                }
            }
            Format::Text => {
                self.out.write_all(text_line(ev).as_bytes())?;
                self.out.write_all(b"\n")?;
            }
        }
        if self.log.is_some() || self.broadcast {
            let line = text_line(ev);
            if let Some(log) = &mut self.log {
                // A full disk must not stop monitoring; the next write tries again.
                let _ = writeln!(log, "{line}");
            }
            if self.broadcast && matches!(ev, Event::Connection(_)) {
                broadcast(&format!(
                    "conntrack-tray @{}: {line}",
                    sanitize(&self.hostname)
                ));
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(log) = &mut self.log {
            let _ = log.flush();
        }
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Opens the log file for appending, creating it readable by root and the adm group only.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

const UTMP_PATH: &str = "/var/run/utmp";
const UTMP_RECORD: usize = 384;
const USER_PROCESS: i16 = 7;

/// The terminals of logged-in users, from utmp: `pts/3`, `tty1`.
pub fn utmp_terminals(bytes: &[u8]) -> Vec<String> {
    bytes
        .chunks_exact(UTMP_RECORD)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .filter_map(|r| {
            let line = &r[8..40];
            let end = line.iter().position(|b| *b == 0).unwrap_or(line.len());
            let name = std::str::from_utf8(&line[..end]).ok()?;
            let ok = !name.is_empty()
                && !name.contains("..")
                && !name.starts_with('/')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '/');
            ok.then(|| name.to_string())
        })
        .collect()
}

/// Sends one line to every logged-in terminal, like `wall`, without running a program.
/// Control characters are stripped, not escaped, as terminals would act on them.
pub fn broadcast(line: &str) {
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    let Ok(utmp) = std::fs::read(UTMP_PATH) else {
        return;
    };
    for tty in utmp_terminals(&utmp) {
        let path = Path::new("/dev").join(&tty);
        let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        if f.metadata()
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false)
        {
            let mut f = f;
            let _ = write!(f, "\r\n{clean}\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Direction, Family, Process, Proto};

    fn conn(comm: &str, exe: &str) -> Connection {
        Connection {
            ts: "2026-11-24T20:00:00.123456Z".into(),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            direction: Direction::Outbound,
            local_ip: "10.0.0.1".parse().expect("ip"),
            local_port: Some(43210),
            remote_ip: "93.184.216.34".parse().expect("ip"),
            remote_port: Some(443),
            host: None,
            host_source: None,
            icmp: None,
            critical: true,
            ct_id: Some(7),
            zone: None,
            mark: Some(0),
            process: Some(Process {
                pid: 4242,
                comm: comm.into(),
                exe: Some(exe.into()),
                cmdline: vec![comm.into(), "https://example.com".into()],
                uid: 1000,
                user: Some("alice".into()),
                ..Default::default()
            }),
            attributed_by: None,
            also_held_by: Vec::new(),
            also_held_by_more: 0,
            holders_incomplete: false,
        }
    }

    #[test]
    fn json_line_has_the_documented_keys_and_stays_one_line() {
        let ev = Event::Connection(Box::new(conn("ev\nil\x1b[2J", "/tmp/x\ny")));
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "h".into());
        out.emit(&ev).expect("write");
        let bytes = out.into_inner();
        let text = String::from_utf8(bytes).expect("utf8");
        assert_eq!(text.matches('\n').count(), 1);
        assert!(!text.contains('\x1b'));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "connection");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["local_ip"], "10.0.0.1");
        assert_eq!(v["local_port"], 43210);
        assert_eq!(v["remote_ip"], "93.184.216.34");
        assert_eq!(v["remote_port"], 443);
        assert_eq!(v["critical"], true);
        assert_eq!(v["process"]["pid"], 4242);
        assert_eq!(v["process"]["comm"], "ev\nil\x1b[2J");
        assert_eq!(v["process"]["user"], "alice");
        assert_eq!(v["process"]["cmdline"][1], "https://example.com");
        // And it reads back as the same event.
        let back: Event = serde_json::from_str(&text).expect("event");
        assert_eq!(back, ev);
    }

    #[test]
    fn a_process_written_again_is_the_same_json_and_a_changed_one_is_written_anew() {
        let mut out = Output::new(Format::Json, Vec::new(), None, false, "box".into());
        let a = conn("curl", "/usr/bin/curl");
        let mut b = a.clone();
        // The same pid, one field apart: written anew, not the remembered text.
        if let Some(p) = b.process.as_mut() {
            p.exe_changed = Some(Box::new(crate::event::ExeChanged {
                path: "/usr/bin/curl".into(),
                was: "ab".repeat(32),
                now: None,
                since: crate::event::ChangedSince::Whitelisted,
            }));
        }
        let mut none = a.clone();
        none.process = None;
        let sent = [&a, &a, &b, &b, &a, &none, &a];
        for c in sent {
            out.emit(&Event::Connection(Box::new(c.clone())))
                .expect("emit");
        }
        let text = String::from_utf8(out.into_inner()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), sent.len());
        for (line, c) in lines.iter().zip(sent) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let want = serde_json::to_value(&c.process).expect("json");
            assert_eq!(v["process"], want, "{line}");
            let back: Event = serde_json::from_str(line).expect("event");
            assert_eq!(back, Event::Connection(Box::new(c.clone())));
        }
        assert_eq!(lines[0], lines[1]);
        assert_eq!(lines[0], lines[4]);
        assert_ne!(lines[1], lines[2]);
    }

    #[test]
    fn unknown_process_is_null_in_json_and_marked_in_text() {
        let mut c = conn("x", "/x");
        c.process = None;
        let ev = Event::Connection(Box::new(c));
        let v: serde_json::Value = serde_json::to_value(&ev).expect("json");
        assert!(v["process"].is_null());
        assert!(text_line(&ev).contains("[unknown process]"));
    }

    #[test]
    fn other_holders_are_in_the_text_line_and_the_json() {
        let mut c = conn("python3", "/usr/bin/python3");
        c.also_held_by = vec![Process {
            pid: 7,
            comm: "e\x1bvil".into(),
            ..Default::default()
        }];
        c.also_held_by_more = 3;
        let ev = Event::Connection(Box::new(c.clone()));
        let text = text_line(&ev);
        assert!(text.contains(" also held by e"), "{text}");
        assert!(
            text.contains("vil[7] and 3 more") && !text.contains('\x1b'),
            "{text}"
        );
        assert!(!text.contains("unchecked"));
        let json = |ev: &Event| -> serde_json::Value {
            let mut out = Output::new(Format::Json, Vec::new(), None, false, "h".into());
            out.emit(ev).expect("write");
            serde_json::from_slice(&out.into_inner()).expect("json")
        };
        let v = json(&ev);
        assert_eq!(v["also_held_by"][0]["pid"], 7);
        assert_eq!(v["also_held_by_more"], 3);
        assert!(v.get("holders_incomplete").is_none());
        c.also_held_by.clear();
        c.also_held_by_more = 0;
        c.holders_incomplete = true;
        let ev = Event::Connection(Box::new(c));
        assert!(text_line(&ev).contains(" [other holders unchecked]"));
        let v = json(&ev);
        assert!(v.get("also_held_by").is_none() && v.get("also_held_by_more").is_none());
        assert_eq!(v["holders_incomplete"], true);
    }

    #[test]
    fn text_line_is_escaped_and_complete() {
        let ev = Event::Connection(Box::new(conn("ev\nil\x1b[2J", "/tmp/a\rb")));
        let line = text_line(&ev);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.contains("ev\\x0ail\\x1b[2J[4242]"), "{line}");
        assert!(
            line.contains("10.0.0.1:43210 -> 93.184.216.34:443"),
            "{line}"
        );
        assert!(
            line.contains("[critical]") && line.contains("user alice"),
            "{line}"
        );
    }

    #[test]
    fn the_looked_up_name_follows_the_address_escaped() {
        let mut c = conn("curl", "/usr/bin/curl");
        c.host = Some("evil\x1b[2J.test".into());
        let line = text_line(&Event::Connection(Box::new(c)));
        assert!(
            line.contains("93.184.216.34:443 (evil\\x1b[2J.test)"),
            "{line}"
        );
    }

    #[test]
    fn ipv6_endpoints_are_bracketed_and_complete() {
        let mut c = conn("curl", "/usr/bin/curl");
        c.local_ip = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1".parse().expect("ip");
        c.remote_ip = "2001:db8::2".parse().expect("ip");
        let line = text_line(&Event::Connection(Box::new(c)));
        assert!(
            line.contains("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:43210 -> [2001:db8::2]:443"),
            "{line}"
        );
    }

    #[test]
    fn utmp_terminals_are_user_processes_with_sane_names() {
        let rec = |kind: i16, line: &str| {
            let mut r = vec![0u8; UTMP_RECORD];
            r[..2].copy_from_slice(&kind.to_ne_bytes());
            r[8..8 + line.len()].copy_from_slice(line.as_bytes());
            r
        };
        let mut bytes = rec(7, "pts/3");
        bytes.extend(rec(8, "pts/4")); // dead process
        bytes.extend(rec(7, "../etc/passwd"));
        bytes.extend(rec(7, "tty1"));
        assert_eq!(utmp_terminals(&bytes), vec!["pts/3", "tty1"]);
    }
}
