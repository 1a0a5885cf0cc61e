//! Desktop notifications: what a notification is ([`Note`]), how floods are held back
//! ([`Flood`]), and the thin layer that talks to the notification server (notify-rust over
//! D-Bus).
//!
//! A [`Note`] holds text already made for a person (`text` builds it with the one sanitizer);
//! nothing here sanitizes it again. The one thing added here is the server's own need: for a
//! server that renders body markup, `&`, `<` and `>` of the body are escaped as it is sent
//! ([`markup_escaped`]). Summaries and button labels are plain text by the specification.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

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

/// Escapes `&`, `<` and `>` for a server that renders body markup. The second step, after
/// the text was made for a person (see `text`); a server without markup gets the text as it
/// is.
pub fn markup_escaped(s: &str, markup: bool) -> Cow<'_, str> {
    if !markup || !s.contains(['&', '<', '>']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A notification's content and buttons, in plain text for a person.
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

    /// Shows a note (its body escaped for a markup server); a thread waits for its action
    /// (bounded by the flood limit).
    pub fn show(&self, id: u64, note: &Note) -> Result<(), String> {
        let mut n = notify_rust::Notification::new();
        n.appname("conntrack-tray")
            .summary(&note.summary)
            .body(&markup_escaped(&note.body, self.caps.markup))
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

    /// Says something once: on stderr and as a plain notification. `text` is already for a
    /// person: any outside string in it went through `text` (or `sanitize`) where it was put.
    pub fn tell(&self, text: &str) {
        eprintln!("conntrack-tray: {text}");
        let note = Note {
            summary: "conntrack-tray".into(),
            body: text.to_string(),
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

    #[test]
    fn markup_is_escaped_only_for_a_markup_server_and_only_once() {
        assert_eq!(
            markup_escaped("/tmp/<b>a&b</b>", true),
            "/tmp/&lt;b&gt;a&amp;b&lt;/b&gt;"
        );
        assert_eq!(markup_escaped("/tmp/<b>", false), "/tmp/<b>");
        assert!(matches!(markup_escaped("plain", true), Cow::Borrowed(_)));
        // Sanitized text keeps its visible escapes; markup escaping adds only entities.
        let shown = conntrack_tray_helper::sanitize::display("<x>\u{202e}", 80);
        assert_eq!(markup_escaped(&shown, true), "&lt;x&gt;\\u{202e}");
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
}
