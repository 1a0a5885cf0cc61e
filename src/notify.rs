//! Desktop notifications: what a reported connection looks like, how floods are held back,
//! and the thin layer that talks to the notification server (notify-rust over D-Bus).
//!
//! Everything shown comes from the watched programs and is untrusted: control characters are
//! dropped and, when the server renders markup, `&`, `<` and `>` are escaped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use conntrack_tray_helper::config::HostPattern;
pub use conntrack_tray_helper::output::endpoint;
use conntrack_tray_helper::Connection;
use crossbeam_channel::Sender;

/// What the server can do, from GetCapabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub actions: bool,
    pub markup: bool,
}

impl Caps {
    pub fn from_list(caps: &[String]) -> Caps {
        Caps {
            actions: caps.iter().any(|c| c == "actions"),
            markup: caps.iter().any(|c| c == "body-markup"),
        }
    }
}

/// Drops control characters and, for a markup-rendering server, escapes markup.
pub fn clean(s: &str, markup: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '&' if markup => out.push_str("&amp;"),
            '<' if markup => out.push_str("&lt;"),
            '>' if markup => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The program a connection belongs to, for people: the exe's file name, or `comm`.
pub fn program(c: &Connection) -> String {
    c.process
        .as_ref()
        .map(|p| p.program_name().to_string())
        .unwrap_or_else(|| "unknown program".into())
}

/// A notification's content and buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub summary: String,
    pub body: String,
    pub critical: bool,
    pub icon: &'static str,
    /// (action key, label)
    pub actions: Vec<(String, String)>,
}

pub const ACTION_DETAILS: &str = "default";
pub const ACTION_WL_PROGRAM: &str = "whitelist-program";
pub const ACTION_WL_REMOTE: &str = "whitelist-remote";
pub const ACTION_WL_HOST: &str = "whitelist-host";
pub const ACTION_MUTE: &str = "mute";

/// The notification for one reported connection seen on `host`.
pub fn connection_note(c: &Connection, host: &str, caps: &Caps) -> Note {
    let m = caps.markup;
    let prog = program(c);
    let arrow = match c.direction {
        conntrack_tray_helper::Direction::Inbound => "←",
        _ => "→",
    };
    let remote = match &c.host {
        Some(host) => format!("{host} ({})", endpoint(&c.remote_ip, c.remote_port)),
        None => endpoint(&c.remote_ip, c.remote_port),
    };
    let summary = clean(&format!("{prog} {arrow} {remote}"), false);
    let mut body = Vec::new();
    match &c.process {
        Some(p) => {
            if let Some(exe) = &p.exe {
                body.push(clean(exe, m));
            }
            body.push(format!(
                "pid {}, user {}",
                p.pid,
                clean(&p.user.clone().unwrap_or_else(|| p.uid.to_string()), m)
            ));
        }
        None => body.push("no process could be named".into()),
    }
    body.push(format!(
        "{} {} port {}, on {}",
        c.proto,
        c.direction,
        c.local_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        clean(host, m)
    ));
    if c.critical {
        body.push("critical port".into());
    }
    let mut actions = Vec::new();
    if caps.actions {
        actions.push((ACTION_DETAILS.into(), "Details".into()));
        if let Some(exe) = c.process.as_ref().and_then(|p| p.exe.as_ref()) {
            let name = exe.rsplit('/').next().unwrap_or(exe);
            actions.push((
                ACTION_WL_PROGRAM.into(),
                clean(&format!("Whitelist {name}"), false),
            ));
        }
        actions.push((
            ACTION_WL_REMOTE.into(),
            format!("Whitelist {}", c.remote_ip),
        ));
        if let Some(host) = c
            .host
            .as_deref()
            .filter(|h| h.parse::<HostPattern>().is_ok())
        {
            actions.push((
                ACTION_WL_HOST.into(),
                clean(&format!("Whitelist {host}"), false),
            ));
        }
        if c.process.is_some() {
            actions.push((ACTION_MUTE.into(), "Mute 1 h".into()));
        }
    }
    Note {
        summary,
        body: body.join("\n"),
        critical: c.critical,
        icon: if c.critical {
            "dialog-warning"
        } else {
            "network-wired"
        },
        actions,
    }
}

/// What the flood control decided for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Show,
    /// The same program and remote were shown within the coalescing window.
    Coalesced,
    /// Over the per-minute limit: counted for the summary.
    Limited,
    /// The person muted this program.
    Muted,
}

/// Flood control: per (program, remote) coalescing, then a per-minute limit whose overflow
/// becomes one summary notification. Pure: time comes in as an argument.
pub struct Flood {
    per_minute: usize,
    coalesce: Duration,
    shown: VecDeque<Instant>,
    last: HashMap<(String, IpAddr), Instant>,
    muted: HashMap<String, Instant>,
    held: u64,
    held_programs: HashSet<String>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MEMORY: usize = 4096;

impl Flood {
    pub fn new(per_minute: u32, coalesce_secs: u64) -> Flood {
        Flood {
            per_minute: per_minute.max(1) as usize,
            coalesce: Duration::from_secs(coalesce_secs),
            shown: VecDeque::new(),
            last: HashMap::new(),
            muted: HashMap::new(),
            held: 0,
            held_programs: HashSet::new(),
        }
    }

    pub fn configure(&mut self, per_minute: u32, coalesce_secs: u64) {
        self.per_minute = per_minute.max(1) as usize;
        self.coalesce = Duration::from_secs(coalesce_secs);
    }

    fn prune(&mut self, now: Instant) {
        while self
            .shown
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.shown.pop_front();
        }
        self.muted.retain(|_, until| *until > now);
    }

    pub fn mute(&mut self, program: &str, until: Instant) {
        self.muted.insert(program.to_string(), until);
    }

    pub fn decide(&mut self, program: &str, remote: IpAddr, now: Instant) -> Verdict {
        self.prune(now);
        if self.muted.contains_key(program) {
            return Verdict::Muted;
        }
        let key = (program.to_string(), remote);
        if let Some(t) = self.last.get(&key) {
            if now.saturating_duration_since(*t) < self.coalesce {
                return Verdict::Coalesced;
            }
        }
        if self.shown.len() >= self.per_minute {
            self.held += 1;
            self.held_programs.insert(program.to_string());
            return Verdict::Limited;
        }
        if self.last.len() >= MEMORY {
            self.last.clear();
        }
        self.last.insert(key, now);
        self.shown.push_back(now);
        Verdict::Show
    }

    /// When the limit has room again and connections were held back: (connections, programs)
    /// for one summary, which counts as a notification shown.
    pub fn summary(&mut self, now: Instant) -> Option<(u64, usize)> {
        self.prune(now);
        if self.held == 0 || self.shown.len() >= self.per_minute {
            return None;
        }
        self.shown.push_back(now);
        let out = (self.held, self.held_programs.len());
        self.held = 0;
        self.held_programs.clear();
        Some(out)
    }
}

pub fn summary_note(connections: u64, programs: usize) -> Note {
    Note {
        summary: format!(
            "{connections} more connection{} from {programs} program{}",
            if connections == 1 { "" } else { "s" },
            if programs == 1 { "" } else { "s" }
        ),
        body: "Held back to keep notifications readable; the tray menu lists the recent ones."
            .into(),
        critical: false,
        icon: "network-wired",
        actions: Vec::new(),
    }
}

/// The notification server, through notify-rust.
pub struct Notifier {
    pub caps: Caps,
    actions: Sender<(u64, String)>,
}

impl Notifier {
    /// Asks the server for its capabilities. `actions` receives (note id, action key) when
    /// the person clicks a button.
    pub fn connect(actions: Sender<(u64, String)>) -> Notifier {
        let caps = notify_rust::get_capabilities()
            .map(|c| Caps::from_list(&c))
            .unwrap_or_default();
        Notifier { caps, actions }
    }

    /// Shows a note; a thread waits for its action (bounded by the flood limit).
    pub fn show(&self, id: u64, note: &Note) -> Result<(), String> {
        let mut n = notify_rust::Notification::new();
        n.appname("conntrack-tray")
            .summary(&note.summary)
            .body(&note.body)
            .icon(note.icon)
            .urgency(if note.critical {
                notify_rust::Urgency::Critical
            } else {
                notify_rust::Urgency::Normal
            });
        for (key, label) in &note.actions {
            n.action(key, label);
        }
        let handle = n.show().map_err(|e| e.to_string())?;
        if !note.actions.is_empty() {
            let tx = self.actions.clone();
            std::thread::Builder::new()
                .name("notify-action".into())
                .spawn(move || {
                    handle.wait_for_action(|action| {
                        if action != "__closed" {
                            let _ = tx.send((id, action.to_string()));
                        }
                    });
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Says something once: on stderr and as a plain notification (cleaned for the server).
    pub fn tell(&self, text: &str) {
        eprintln!("conntrack-tray: {text}");
        let note = Note {
            summary: "conntrack-tray".into(),
            body: clean(text, self.caps.markup),
            critical: false,
            icon: "dialog-information",
            actions: Vec::new(),
        };
        let _ = self.show(0, &note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use conntrack_tray_helper::Process;

    fn conn(comm: &str, exe: Option<&str>) -> Connection {
        Connection {
            critical: true,
            process: Some(Process {
                comm: comm.into(),
                exe: exe.map(String::from),
                ..fixtures::process("/usr/bin/curl")
            }),
            ..fixtures::connection("93.184.216.34", 443)
        }
    }

    #[test]
    fn a_connection_note_has_the_fields_and_buttons() {
        let caps = Caps {
            actions: true,
            markup: true,
        };
        let n = connection_note(&conn("curl", Some("/usr/bin/curl")), "laptop", &caps);
        assert_eq!(n.summary, "curl → 93.184.216.34:443");
        assert!(n.body.contains("/usr/bin/curl") && n.body.contains("pid 4242, user alice"));
        assert!(n.body.contains("port 43210") && n.body.contains("on laptop"));
        assert!(n.critical);
        let labels: Vec<&str> = n.actions.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "Details",
                "Whitelist curl",
                "Whitelist 93.184.216.34",
                "Mute 1 h"
            ]
        );
        // Without actions on the server, no buttons.
        assert!(connection_note(&conn("curl", None), "h", &Caps::default())
            .actions
            .is_empty());
    }

    #[test]
    fn a_looked_up_name_leads_the_summary_and_gets_its_button() {
        let caps = Caps {
            actions: true,
            markup: false,
        };
        let mut c = conn("curl", Some("/usr/bin/curl"));
        c.host = Some("api.github.com".into());
        let n = connection_note(&c, "h", &caps);
        assert_eq!(n.summary, "curl → api.github.com (93.184.216.34:443)");
        assert!(n.actions.contains(&(
            ACTION_WL_HOST.to_string(),
            "Whitelist api.github.com".to_string()
        )));
        // A name that is no valid pattern gets no button.
        c.host = Some("bad name!".into());
        assert!(connection_note(&c, "h", &caps)
            .actions
            .iter()
            .all(|(k, _)| k != ACTION_WL_HOST));
    }

    #[test]
    fn hostile_names_are_escaped_for_markup_and_stripped_of_controls() {
        let caps = Caps {
            actions: true,
            markup: true,
        };
        let n = connection_note(&conn("<b>x</b>", Some("/tmp/<i>a&b\n\x1b[2J")), "h", &caps);
        assert!(n.body.contains("/tmp/&lt;i&gt;a&amp;b  [2J"), "{}", n.body);
        assert!(!n.body.contains('\x1b') && !n.summary.chars().any(|c| c.is_control()));
        let plain = connection_note(&conn("x", Some("/tmp/<i>")), "h", &Caps::default());
        assert!(plain.body.contains("/tmp/<i>"));
    }

    #[test]
    fn coalescing_then_rate_limit_then_one_summary() {
        let mut f = Flood::new(5, 60);
        let t0 = Instant::now();
        let ip: IpAddr = "9.9.9.9".parse().expect("ip");
        assert_eq!(f.decide("curl", ip, t0), Verdict::Show);
        assert_eq!(
            f.decide("curl", ip, t0 + Duration::from_secs(1)),
            Verdict::Coalesced
        );
        let mut shown = 1;
        for i in 0..1000u32 {
            let remote = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            if f.decide(
                &format!("p{}", i % 7),
                remote,
                t0 + Duration::from_millis(i.into()),
            ) == Verdict::Show
            {
                shown += 1;
            }
        }
        assert_eq!(shown, 5, "at most 5 a minute");
        assert_eq!(f.summary(t0 + Duration::from_secs(30)), None, "no room yet");
        assert_eq!(f.summary(t0 + Duration::from_secs(61)), Some((1000 - 4, 7)));
        assert_eq!(f.summary(t0 + Duration::from_secs(62)), None, "once");
    }

    #[test]
    fn muted_programs_are_silent_for_the_hour() {
        let mut f = Flood::new(5, 0);
        let t0 = Instant::now();
        let ip: IpAddr = "9.9.9.9".parse().expect("ip");
        f.mute("curl", t0 + Duration::from_secs(3600));
        assert_eq!(f.decide("curl", ip, t0), Verdict::Muted);
        assert_eq!(
            f.decide("curl", ip, t0 + Duration::from_secs(3601)),
            Verdict::Show
        );
    }

    #[test]
    fn summary_wording() {
        assert_eq!(
            summary_note(1, 1).summary,
            "1 more connection from 1 program"
        );
        assert_eq!(
            summary_note(996, 7).summary,
            "996 more connections from 7 programs"
        );
    }
}
