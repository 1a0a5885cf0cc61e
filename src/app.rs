//! The applet's state and decisions: what a helper event, a menu click or a notification
//! button does. No D-Bus, no processes: handlers return [`Effect`]s for `main` to carry out,
//! so the whole behaviour is tested with plain values. The decisions about the helper links
//! themselves (hello, refusal, the status line) are in `links`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use conntrack_tray_helper::commands::Command;
use conntrack_tray_helper::{Connection, Event};

use crate::history::{History, Seen};
use crate::lost::Lost;
use crate::notify::{self, Caps, Flood, Note, Verdict};
use crate::settings::{Edit, Settings};
use crate::text;
use crate::tray::{self, RecentAction, RecentView, View};

/// Something for `main` to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Notify {
        id: u64,
        note: Note,
    },
    /// The filter settings changed: send them to every helper.
    SendConfig,
    /// Tell every helper to pause (true) or resume.
    Pause(bool),
    /// Send one command to the helper of link `link` (see `links::on_report`).
    Send {
        link: usize,
        command: Command,
    },
    /// "Start monitoring…": start the helpers that are not running.
    StartHelpers,
    Autostart(bool),
    /// Open a file with the desktop's default program (xdg-open).
    Open(std::path::PathBuf),
    /// Put text on the clipboard, or show it when there is none.
    Copy(String),
    /// Tell the person something once (a notification and stderr). The text is for a person
    /// already: outside strings in it went through `text` where they were put.
    Tell(String),
    Quit,
}

const NOTE_MEMORY: usize = 256;
const MUTE: Duration = Duration::from_secs(3600);

pub struct App {
    pub settings: Settings,
    pub history: History,
    pub caps: Caps,
    flood: Flood,
    /// Which connection each shown notification was about, for its buttons.
    notes: HashMap<u64, Seen>,
    note_order: VecDeque<u64>,
    next_id: u64,
    pub unseen: bool,
    today: (String, u64),
    pub lost: Lost,
}

impl App {
    pub fn new(settings: Settings, history: History, caps: Caps) -> App {
        let n = &settings.config.notify;
        let flood = Flood::new(n.per_minute, n.coalesce_secs);
        App {
            settings,
            history,
            caps,
            flood,
            notes: HashMap::new(),
            note_order: VecDeque::new(),
            next_id: 0,
            unseen: false,
            today: (String::new(), 0),
            lost: Lost::default(),
        }
    }

    fn note_id(&mut self, seen: Seen) -> u64 {
        self.next_id += 1;
        if self.note_order.len() == NOTE_MEMORY {
            if let Some(old) = self.note_order.pop_front() {
                self.notes.remove(&old);
            }
        }
        self.note_order.push_back(self.next_id);
        self.notes.insert(self.next_id, seen);
        self.next_id
    }

    /// The applet's own check of the whitelist: the helper filters too, but a config change
    /// takes a moment to reach it (and a remote helper may be older).
    fn whitelisted(&self, c: &Connection) -> bool {
        conntrack_tray_helper::filter::whitelisted(&self.settings.config.whitelist, c)
    }

    pub fn events_today(&self) -> u64 {
        self.today.1
    }

    /// Starts today's count at `count` events of `day` (UTC, "2026-11-25"): those the history
    /// kept from before a restart (`History::count_day`).
    pub fn set_today(&mut self, day: String, count: u64) {
        self.today = (day, count);
    }

    /// A line from the helper on `host`.
    pub fn on_event(&mut self, host: &str, ev: Event, now: Instant) -> Vec<Effect> {
        match ev {
            Event::Connection(c) => self.on_connection(host, *c, now),
            Event::Lost { count, .. } => self
                .lost
                .add(host, count, now)
                .map(Effect::Tell)
                .into_iter()
                .collect(),
            Event::Error { message } => vec![Effect::Tell(format!(
                "{}: {}",
                text::host(host),
                text::line(&message)
            ))],
            Event::Hello { .. } | Event::Ack { .. } => Vec::new(),
        }
    }

    fn on_connection(&mut self, host: &str, c: Connection, now: Instant) -> Vec<Effect> {
        if self.whitelisted(&c) || self.settings.config.applet.paused {
            return Vec::new();
        }
        let day = c.ts.get(..10).unwrap_or("").to_string();
        if self.today.0 != day {
            self.today = (day, 0);
        }
        self.today.1 += 1;
        self.unseen = true;
        let seen = Seen {
            host: host.to_string(),
            conn: c,
        };
        let mut effects = Vec::new();
        if let Err(e) = self.history.push(seen.clone()) {
            effects.push(Effect::Tell(format!(
                "cannot write the history: {}",
                text::line(&e.to_string())
            )));
        }
        if !self.settings.config.notify.enabled {
            return effects;
        }
        let program = seen
            .conn
            .process
            .as_ref()
            .map(|p| p.identity().to_string())
            .unwrap_or_default();
        if self.flood.decide(&program, seen.conn.remote_ip, now) == Verdict::Show {
            let note = text::connection_note(&seen.conn, host, &self.caps);
            let id = self.note_id(seen);
            effects.push(Effect::Notify { id, note });
        }
        effects
    }

    /// Once a second: an edited config file, and the flood summary when one is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = match self.settings.reload_if_changed() {
            Some(Ok(())) => {
                let n = &self.settings.config.notify;
                self.flood.configure(n.per_minute, n.coalesce_secs);
                vec![Effect::SendConfig]
            }
            Some(Err(e)) => vec![Effect::Tell(format!(
                "{} (the previous settings stay in force)",
                text::line(&e.to_string())
            ))],
            None => Vec::new(),
        };
        effects.extend(self.flood_summary(now));
        effects.extend(self.lost.due(now).map(Effect::Tell));
        effects
    }

    fn flood_summary(&mut self, now: Instant) -> Vec<Effect> {
        match self.flood.summary(now) {
            Some((n, m)) if self.settings.config.notify.enabled => {
                self.next_id += 1;
                vec![Effect::Notify {
                    id: self.next_id,
                    note: text::summary_note(n, m),
                }]
            }
            _ => Vec::new(),
        }
    }

    fn edit(&mut self, edit: Edit) -> Vec<Effect> {
        match self.settings.apply(&edit) {
            Ok(()) => {
                let n = &self.settings.config.notify;
                self.flood.configure(n.per_minute, n.coalesce_secs);
                match edit {
                    Edit::SetPaused(p) => vec![Effect::Pause(p)],
                    Edit::SetNotifications(_) => Vec::new(),
                    _ => vec![Effect::SendConfig],
                }
            }
            Err(e) => vec![Effect::Tell(format!(
                "could not change the configuration: {}",
                text::line(&e.to_string())
            ))],
        }
    }

    fn act_on(&mut self, seen: &Seen, action: RecentAction, now: Instant) -> Vec<Effect> {
        let c = &seen.conn;
        match action {
            RecentAction::WhitelistProgram => {
                // The absolute exe path, not a bare name another program could also have.
                match c.process.as_ref().and_then(|p| p.exe.clone()) {
                    Some(exe) => self.edit(Edit::WhitelistProcess(exe)),
                    None => vec![Effect::Tell(
                        "this connection's program has no known path".into(),
                    )],
                }
            }
            RecentAction::WhitelistRemote => {
                self.edit(Edit::WhitelistRemote(c.remote_ip.to_string()))
            }
            RecentAction::Mute => {
                if let Some(p) = &c.process {
                    self.flood.mute(p.identity(), now + MUTE);
                }
                Vec::new()
            }
            RecentAction::Copy => vec![Effect::Copy(text::details(seen))],
        }
    }

    /// A button of notification `id` (or its body, `default`).
    pub fn on_action(&mut self, id: u64, action: &str, now: Instant) -> Vec<Effect> {
        let Some(seen) = self.notes.get(&id).cloned() else {
            return Vec::new();
        };
        self.unseen = false;
        match action {
            notify::ACTION_DETAILS => vec![Effect::Notify {
                id: 0,
                note: Note {
                    summary: "Connection details".into(),
                    body: text::details(&seen),
                    critical: false,
                    icon: "dialog-information",
                    actions: Vec::new(),
                },
            }],
            notify::ACTION_WL_PROGRAM => self.act_on(&seen, RecentAction::WhitelistProgram, now),
            notify::ACTION_WL_REMOTE => self.act_on(&seen, RecentAction::WhitelistRemote, now),
            notify::ACTION_MUTE => self.act_on(&seen, RecentAction::Mute, now),
            notify::ACTION_WL_HOST => match seen.conn.host.clone() {
                Some(host) => self.edit(Edit::WhitelistHost(host)),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// A menu click.
    pub fn on_menu(&mut self, id: &str, autostart: bool, now: Instant) -> Vec<Effect> {
        self.unseen = false;
        if let Some((i, action)) = tray::parse_recent_id(id) {
            let Some(seen) = self.history.get(i).cloned() else {
                return Vec::new();
            };
            return self.act_on(&seen, action, now);
        }
        let cfg = &self.settings.config;
        match id {
            tray::PAUSE => self.edit(Edit::SetPaused(!cfg.applet.paused)),
            tray::NOTIFICATIONS => self.edit(Edit::SetNotifications(!cfg.notify.enabled)),
            tray::SHOW_UNKNOWN => self.edit(Edit::SetShowUnknown(!cfg.filter.show_unknown)),
            tray::CRITICAL_ONLY => self.edit(Edit::SetCriticalOnly(!cfg.filter.critical_only)),
            tray::ALL_PROTOCOLS => {
                let all = cfg.all_protocols();
                self.edit(Edit::SetAllProtocols(!all))
            }
            tray::AUTOSTART => vec![Effect::Autostart(!autostart)],
            tray::START => vec![Effect::StartHelpers],
            tray::EDIT => vec![Effect::Open(self.settings.path().to_path_buf())],
            tray::LOG => match History::default_path() {
                Some(p) => vec![Effect::Open(p)],
                None => Vec::new(),
            },
            tray::QUIT => vec![Effect::Quit],
            _ => Vec::new(),
        }
    }

    /// The menu's view; `status` describes the helpers.
    pub fn view(&self, status: String, can_start: bool, autostart: bool) -> View {
        let cfg = &self.settings.config;
        View {
            status,
            recent: self
                .history
                .recent()
                .map(|s| RecentView {
                    label: text::recent_label(s),
                    program: text::exe_name(&s.conn),
                    remote: s.conn.remote_ip.to_string(),
                })
                .collect(),
            can_start,
            paused: cfg.applet.paused,
            notifications: cfg.notify.enabled,
            show_unknown: cfg.filter.show_unknown,
            critical_only: cfg.filter.critical_only,
            all_protocols: cfg.all_protocols(),
            autostart,
        }
    }

    pub fn icon_state(&self, helpers_running: bool) -> tray::IconState {
        if !helpers_running {
            tray::IconState::Stopped
        } else if self.settings.config.applet.paused {
            tray::IconState::Paused
        } else if self.unseen {
            tray::IconState::Alert
        } else {
            tray::IconState::Monitoring
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn conn(port: u16, exe: &str) -> Connection {
        Connection {
            process: Some(fixtures::process(exe)),
            ..fixtures::connection("9.9.9.9", port)
        }
    }

    fn app(dir: &tempfile::TempDir) -> App {
        let s = Settings::load(dir.path().join("config.toml")).expect("settings");
        App::new(
            s,
            History::open(None),
            Caps {
                actions: true,
                markup: true,
            },
        )
    }

    fn ev(c: Connection) -> Event {
        Event::Connection(Box::new(c))
    }

    #[test]
    fn a_connection_becomes_a_notification_and_a_recent_entry() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let fx = a.on_event("laptop", ev(conn(443, "/usr/bin/curl")), Instant::now());
        assert!(
            matches!(&fx[..], [Effect::Notify { note, .. }] if note.summary == "9.9.9.9:443 ← curl")
        );
        assert_eq!(a.events_today(), 1);
        assert!(a.unseen);
        let v = a.view("s".into(), false, false);
        assert_eq!(v.recent[0].label, "9.9.9.9:443 ← curl, on laptop");
    }

    #[test]
    fn whitelisting_from_a_notification_writes_the_exe_path_and_silences_the_next() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let now = Instant::now();
        let fx = a.on_event("h", ev(conn(443, "/usr/bin/curl")), now);
        let Effect::Notify { id, .. } = fx[0].clone() else {
            panic!("{fx:?}")
        };
        assert_eq!(
            a.on_action(id, notify::ACTION_WL_PROGRAM, now),
            vec![Effect::SendConfig]
        );
        assert!(a
            .settings
            .config
            .whitelist
            .processes
            .contains(&"/usr/bin/curl".to_string()));
        assert!(a
            .on_event("h", ev(conn(8443, "/usr/bin/curl")), now)
            .is_empty());
        // Another curl elsewhere is not whitelisted by the path.
        assert!(!a.on_event("h", ev(conn(8443, "/opt/curl")), now).is_empty());
    }

    #[test]
    fn a_whitelisted_program_sharing_its_socket_does_not_silence_the_connection() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        a.settings.config.whitelist.processes = vec!["/usr/bin/curl".into()];
        let now = Instant::now();
        assert!(a
            .on_event("h", ev(conn(443, "/usr/bin/curl")), now)
            .is_empty());
        let shared = Connection {
            also_held_by: vec![fixtures::process("/tmp/evil")],
            ..conn(444, "/usr/bin/curl")
        };
        assert!(!a.whitelisted(&shared));
        assert!(!a.on_event("h", ev(shared), now).is_empty());
        let unsure = Connection {
            holders_incomplete: true,
            ..conn(445, "/usr/bin/curl")
        };
        assert!(!a.whitelisted(&unsure));
    }

    #[test]
    fn whitelisting_a_name_silences_it_everywhere_it_resolves() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let now = Instant::now();
        let mut c = conn(443, "/usr/bin/curl");
        c.host = Some("api.github.com".into());
        c.host_source = Some(conntrack_tray_helper::event::HostSource::Dns);
        let fx = a.on_event("h", ev(c.clone()), now);
        let Effect::Notify { id, note } = fx[0].clone() else {
            panic!("{fx:?}")
        };
        assert!(note
            .actions
            .iter()
            .any(|(k, _)| k == notify::ACTION_WL_HOST));
        assert_eq!(
            a.on_action(id, notify::ACTION_WL_HOST, now),
            vec![Effect::SendConfig]
        );
        assert_eq!(
            a.settings.config.whitelist.hosts[0].to_string(),
            "api.github.com"
        );
        c.remote_ip = "140.82.112.9".parse().expect("ip");
        assert!(a.on_event("h", ev(c), now).is_empty());
    }

    #[test]
    fn toggles_edit_the_config_and_reach_the_helper() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let now = Instant::now();
        assert_eq!(
            a.on_menu(tray::CRITICAL_ONLY, false, now),
            vec![Effect::SendConfig]
        );
        assert!(a.settings.config.filter.critical_only);
        assert_eq!(
            a.on_menu(tray::PAUSE, false, now),
            vec![Effect::Pause(true)]
        );
        assert_eq!(a.icon_state(true), tray::IconState::Paused);
        assert!(
            a.on_event("h", ev(conn(443, "/usr/bin/curl")), now)
                .is_empty(),
            "paused"
        );
        assert_eq!(
            a.on_menu(tray::AUTOSTART, false, now),
            vec![Effect::Autostart(true)]
        );
        assert_eq!(a.on_menu(tray::QUIT, false, now), vec![Effect::Quit]);
        // Persisted: a fresh load sees the toggles.
        let again = Settings::load(dir.path().join("config.toml")).expect("load");
        assert!(again.config.filter.critical_only && again.config.applet.paused);
    }

    #[test]
    fn a_thousand_events_make_at_most_five_notifications_then_one_summary() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let t0 = Instant::now();
        let mut shown = 0;
        for i in 0..1000u16 {
            let mut c = conn(1000 + i, &format!("/usr/bin/p{}", i % 9));
            c.remote_ip = std::net::IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            shown += a
                .on_event("h", ev(c), t0)
                .iter()
                .filter(|e| matches!(e, Effect::Notify { .. }))
                .count();
        }
        assert_eq!(shown, 5);
        assert!(a.on_tick(t0 + Duration::from_secs(10)).is_empty());
        let fx = a.on_tick(t0 + Duration::from_secs(61));
        assert!(
            matches!(&fx[..], [Effect::Notify { note, .. }] if note.summary == "995 more connections from 9 programs"),
            "{fx:?}"
        );
    }

    #[test]
    fn mute_and_recent_menu_actions() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let now = Instant::now();
        a.on_event("h", ev(conn(443, "/usr/bin/curl")), now);
        assert!(a
            .on_menu(&tray::recent_id(0, RecentAction::Mute), false, now)
            .is_empty());
        assert!(a
            .on_event(
                "h",
                ev(conn(444, "/usr/bin/curl")),
                now + Duration::from_secs(120)
            )
            .iter()
            .all(|e| !matches!(e, Effect::Notify { .. })));
        let fx = a.on_menu(
            &tray::recent_id(0, RecentAction::WhitelistRemote),
            false,
            now,
        );
        assert_eq!(fx, vec![Effect::SendConfig]);
        assert_eq!(a.settings.config.whitelist.remote[0].to_string(), "9.9.9.9");
        let fx = a.on_menu(&tray::recent_id(0, RecentAction::Copy), false, now);
        assert!(matches!(&fx[..], [Effect::Copy(t)] if t.contains("exe: /usr/bin/curl")));
    }

    #[test]
    fn an_edited_file_is_picked_up_and_a_broken_one_is_reported_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[filter]\ncritical_only = true\n").expect("write");
        assert_eq!(a.on_tick(Instant::now()), vec![Effect::SendConfig]);
        assert!(a.settings.config.filter.critical_only);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "[filter]\ncritical_only = 3\n").expect("write");
        let fx = a.on_tick(Instant::now());
        assert!(
            matches!(&fx[..], [Effect::Tell(t)] if t.contains(":2:") && t.contains("previous settings")),
            "{fx:?}"
        );
        assert!(
            a.settings.config.filter.critical_only,
            "last good config stays"
        );
        assert!(a.on_tick(Instant::now()).is_empty(), "once");
    }

    #[test]
    fn lost_and_error_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut a = app(&dir);
        let lost = |count| Event::Lost {
            count,
            reason: "kernel".into(),
        };
        let now = Instant::now();
        let fx = a.on_event("h", lost(7), now);
        assert!(
            matches!(&fx[..], [Effect::Tell(t)] if t.contains("7 on h")),
            "told at once: {fx:?}"
        );
        // Within the minute, counted, not told again (see `lost`).
        assert!(a.on_event("pi", lost(2), now).is_empty());
        assert!(a.on_tick(now).is_empty());
        assert_eq!(a.lost.total, 9);
        let fx = a.on_event(
            "h",
            Event::Error {
                message: "bad\nthing".into(),
            },
            Instant::now(),
        );
        assert_eq!(fx, vec![Effect::Tell("h: bad\\x0athing".into())]);
    }
}
