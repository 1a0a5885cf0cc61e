//! Desktop notifications: what a notification is ([`Note`]) and the thin layer that talks to
//! the notification server over the session bus ([`Notifier`]). Which connections notify, and
//! in which notification, is `alerts`'.
//!
//! A [`Note`] holds text already made for a person (`text` builds it with the one sanitizer);
//! nothing here sanitizes it again. The one thing added here is the server's own need: for a
//! server that renders body markup, `&`, `<` and `>` of the body are escaped as it is sent
//! ([`markup_escaped`]). Summaries and button labels are plain text by the specification.
//!
//! The server is spoken to directly over one zbus connection (the applet's own, on which
//! it also holds its name), with one thread that listens for the buttons and closes of all
//! notifications. notify-rust, used before, opened a D-Bus connection per notification and
//! kept a thread waiting on each one with buttons.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

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
    /// The server removes it after this long; the applet closes its own live ones too (some
    /// servers never expire critical notifications).
    pub expire: Duration,
}

pub const ACTION_DETAILS: &str = "default";
pub const ACTION_WL_PROGRAM: &str = "whitelist-program";
pub const ACTION_WL_REMOTE: &str = "whitelist-remote";
pub const ACTION_WL_HOST: &str = "whitelist-host";
pub const ACTION_MUTE: &str = "mute";
/// The same on the watched host the connection was seen on only.
pub const ACTION_WL_PROGRAM_ON_HOST: &str = "whitelist-program-on-host";
pub const ACTION_WL_REMOTE_ON_HOST: &str = "whitelist-remote-on-host";
pub const ACTION_MUTE_ON_HOST: &str = "mute-on-host";

/// The notification server, over the applet's session bus connection.
pub struct Notifier {
    pub caps: Caps,
    proxy: Option<zbus::blocking::Proxy<'static>>,
    /// The server's id of each of our notifications on screen, to replace or close it.
    server_ids: HashMap<u64, u32>,
    /// The server's ids of ours, each with our id and the keys of the buttons it shows: a
    /// button press is taken only for a key the notification offered.
    ours: HashMap<u32, (u64, Vec<String>)>,
    told: u64,
}

const TOLD_IDS: u64 = 1 << 62;

/// What the person did with a notification, by the server's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Action(u32, String),
    Closed(u32),
}

const DEST: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
/// Our notifications remembered for replacing and for their buttons.
const REMEMBERED: usize = 512;

impl Notifier {
    /// Asks the server for its capabilities over `conn`, and starts the one thread that sends
    /// every ActionInvoked and NotificationClosed on to `replies`. Without a server there are
    /// no capabilities, and showing reports an error.
    pub fn connect(conn: &zbus::blocking::Connection, replies: Sender<Reply>) -> Notifier {
        let proxy = zbus::blocking::Proxy::new(conn, DEST, PATH, DEST).ok();
        let caps = proxy
            .as_ref()
            .and_then(|p| p.call::<_, _, Vec<String>>("GetCapabilities", &()).ok())
            .map(|c| Caps::from_list(&c))
            .unwrap_or_default();
        if let Err(e) = listen(conn, replies) {
            eprintln!("conntrack-tray: cannot listen to notification buttons: {e}");
        }
        Notifier {
            caps,
            proxy,
            server_ids: HashMap::new(),
            ours: HashMap::new(),
            told: 0,
        }
    }

    /// Our id for a press of button `key` on the server's `id`: none unless that notification
    /// is ours and shows that button. Another program on the bus cannot press a button it
    /// names (`whitelist-host` on a notification that offered none, say).
    pub fn pressed(&self, server_id: u32, key: &str) -> Option<u64> {
        let (id, keys) = self.ours.get(&server_id)?;
        keys.iter().any(|k| k == key).then_some(*id)
    }

    /// Shows note `id`, in place of the one on screen under the same id if there is one.
    pub fn show(&mut self, id: u64, note: &Note) -> Result<(), String> {
        let proxy = self
            .proxy
            .as_ref()
            .ok_or_else(|| "no notification server".to_string())?;
        let replaces = self.server_ids.get(&id).copied().unwrap_or(0);
        let actions: Vec<&str> = note
            .actions
            .iter()
            .flat_map(|(key, label)| [key.as_str(), label.as_str()])
            .collect();
        let mut hints: HashMap<&str, zbus::zvariant::Value> = HashMap::new();
        hints.insert(
            "urgency",
            zbus::zvariant::Value::U8(if note.critical { 2 } else { 1 }),
        );
        hints.insert(
            "desktop-entry",
            zbus::zvariant::Value::from("conntrack-tray"),
        );
        hints.insert("category", zbus::zvariant::Value::from("network"));
        let expire = i32::try_from(note.expire.as_millis()).unwrap_or(i32::MAX);
        let body = markup_escaped(&note.body, self.caps.markup);
        let server_id: u32 = proxy
            .call(
                "Notify",
                &(
                    "conntrack-tray",
                    replaces,
                    note.icon,
                    note.summary.as_str(),
                    body.as_ref(),
                    actions,
                    hints,
                    expire,
                ),
            )
            .map_err(|e| e.to_string())?;
        if replaces != server_id {
            self.ours.remove(&replaces);
        }
        if self.server_ids.len() >= REMEMBERED && !self.server_ids.contains_key(&id) {
            // The oldest of ours (the smallest id) goes: it is long off the screen.
            if let Some(old) = self.server_ids.keys().min().copied() {
                if let Some(s) = self.server_ids.remove(&old) {
                    self.ours.remove(&s);
                }
            }
        }
        self.server_ids.insert(id, server_id);
        let keys = note.actions.iter().map(|(key, _)| key.clone()).collect();
        self.ours.insert(server_id, (id, keys));
        Ok(())
    }

    /// Closes note `id` if it is on screen.
    pub fn close(&mut self, id: u64) {
        let Some(server_id) = self.server_ids.remove(&id) else {
            return;
        };
        self.ours.remove(&server_id);
        if let Some(p) = &self.proxy {
            let _ = p.call::<_, _, ()>("CloseNotification", &(server_id,));
        }
    }

    /// The server closed the server's notification `id` (expired, dismissed, or replaced).
    pub fn forget(&mut self, server_id: u32) -> Option<u64> {
        let (ours, _) = self.ours.remove(&server_id)?;
        self.server_ids.remove(&ours);
        Some(ours)
    }

    /// Says something once: on stderr and as a plain notification. `text` is already for a
    /// person: any outside string in it went through `text` (or `sanitize`) where it was put.
    pub fn tell(&mut self, text: &str) {
        eprintln!("conntrack-tray: {text}");
        // Ids of their own, far from the applet's (which count up from 1).
        self.told += 1;
        let id = TOLD_IDS + self.told;
        let note = Note {
            summary: "conntrack-tray".into(),
            body: text.to_string(),
            critical: false,
            icon: "dialog-information",
            actions: Vec::new(),
            expire: Duration::from_secs(15),
        };
        let _ = self.show(id, &note);
    }
}

/// The thread that hears every button and close of the server's notifications, on `conn`.
///
/// Only signals sent by the server itself count: the bus lets any client send a signal with
/// this interface and path, to everyone or to the applet alone, and the watched program is a
/// client of the same bus. A signal's sender is the unique name the bus gave its connection,
/// which no client can choose; it must be the current owner of the server's name (asked
/// again when it is not the one last seen: the server may have restarted).
fn listen(conn: &zbus::blocking::Connection, replies: Sender<Reply>) -> zbus::Result<()> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(DEST)?
        .path(PATH)?
        .build();
    let messages = zbus::blocking::MessageIterator::for_match_rule(rule, conn, Some(64))?;
    let bus = zbus::blocking::fdo::DBusProxy::new(conn)?;
    std::thread::Builder::new()
        .name("notify-replies".into())
        .spawn(move || {
            let mut server: Option<String> = owner(&bus);
            let mut asked = std::time::Instant::now();
            for m in messages.flatten() {
                let h = m.header();
                let Some(sender) = h.sender().map(|s| s.to_string()) else {
                    continue;
                };
                if server.as_deref() != Some(sender.as_str()) {
                    // At most once a second: a flood of forged signals costs one round trip
                    // to the bus a second, not one each.
                    if asked.elapsed() < OWNER_ASKED_EVERY {
                        continue;
                    }
                    server = owner(&bus);
                    asked = std::time::Instant::now();
                    if server.as_deref() != Some(sender.as_str()) {
                        continue;
                    }
                }
                let reply = match h.member().map(|m| m.as_str()) {
                    Some("ActionInvoked") => m
                        .body()
                        .deserialize::<(u32, String)>()
                        .ok()
                        .map(|(id, key)| Reply::Action(id, key)),
                    Some("NotificationClosed") => m
                        .body()
                        .deserialize::<(u32, u32)>()
                        .ok()
                        .map(|(id, _)| Reply::Closed(id)),
                    _ => None,
                };
                if let Some(r) = reply {
                    if replies.send(r).is_err() {
                        return;
                    }
                }
            }
        })
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    Ok(())
}

/// How often a signal from a sender other than the server last seen may have the bus asked
/// who the server is now (it may have restarted).
const OWNER_ASKED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The unique name that owns the notification server's name now, if any.
fn owner(bus: &zbus::blocking::fdo::DBusProxy<'_>) -> Option<String> {
    let name = zbus::names::BusName::try_from(DEST).ok()?;
    bus.get_name_owner(name).ok().map(|o| o.to_string())
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
}
