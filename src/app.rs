//! The applet's state and decisions: what a helper event, a menu click or a notification
//! button does. No D-Bus, no processes: handlers return [`Effect`]s for `main` to carry out,
//! so the whole behaviour is tested with plain values. The decisions about the helper links
//! themselves (hello, refusal, the status line) are in `links`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use conntrack_tray_helper::commands::Command;
use conntrack_tray_helper::{Connection, Event};

use crate::alerts::{self, Alerts, Decision, Shown};
use crate::history::{History, Seen};
use crate::lost::Lost;
use crate::notify::{self, Caps, Note};
use crate::novelty::{self, Learned, Novelty};
use crate::settings::{AlertOn, Edit, Settings};
use crate::text;
use crate::tray::{self, RecentAction, RecentView, View};

/// Something for `main` to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Show notification `id`, in place of the one on screen under that id if any.
    Notify {
        id: u64,
        note: Note,
    },
    /// Close notification `id` if it is still on screen.
    Close(u64),
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
    /// Start the helper of this link now (it was waiting to be restarted).
    RestartNow(usize),
    /// Do not restart the helper of this link until the person starts it.
    Hold(usize),
    Autostart(bool),
    /// Show the connections window, scrolled to this destination if given.
    ShowWindow(Option<crate::window::model::GroupKey>),
    /// Put text on the clipboard, or show it when there is none.
    Copy(String),
    /// Tell the person something once (a notification and stderr). The text is for a person
    /// already: outside strings in it went through `text` where they were put.
    Tell(String),
    Quit,
}

const NOTE_MEMORY: usize = 256;
pub const ACTION_RESTART: &str = "restart-now";
/// Why a program cannot be whitelisted: no path, or one the helper could not verify.
const NOT_WHITELISTABLE: &str =
    "this connection's program has no verified path: it can be muted, not whitelisted";
pub const ACTION_NO_RESTART: &str = "no-restart";
const MUTE: Duration = Duration::from_secs(3600);
/// What was learned is written at most this often (and when the applet quits).
const SAVE_EVERY: Duration = Duration::from_secs(10);

pub struct App {
    pub settings: Settings,
    pub history: History,
    pub learned: Learned,
    pub caps: Caps,
    alerts: Alerts,
    /// The latest news each notification is about, for its buttons and its text.
    notes: HashMap<u64, (Seen, Novelty)>,
    note_order: VecDeque<u64>,
    /// When what was learned is next written, if anything is waiting.
    save_at: Option<Instant>,
    /// The restart notices on screen, by notification id: the link each is about.
    restart_notes: HashMap<u64, usize>,
    /// The hosts watched over ssh (their labels), and the applet's own ssh processes and
    /// their local ports, to know its own links (see `own`).
    remote_hosts: HashSet<String>,
    own_pids: HashSet<u32>,
    own_ports: HashMap<String, HashSet<(u16, u16)>>,
    pub unseen: bool,
    today: (String, u64),
    pub lost: Lost,
}

impl App {
    pub fn new(settings: Settings, history: History, learned: Learned, caps: Caps) -> App {
        let alerts = Alerts::new(settings.config.notify.per_minute);
        App {
            settings,
            history,
            learned,
            caps,
            alerts,
            notes: HashMap::new(),
            note_order: VecDeque::new(),
            save_at: None,
            restart_notes: HashMap::new(),
            remote_hosts: HashSet::new(),
            own_pids: HashSet::new(),
            own_ports: HashMap::new(),
            unseen: false,
            today: (String::new(), 0),
            lost: Lost::default(),
        }
    }

    /// Remembers what notification `id` is about now.
    fn remember(&mut self, id: u64, seen: Seen, novelty: Novelty) {
        if self.notes.insert(id, (seen, novelty)).is_none() {
            self.note_order.push_back(id);
            if self.note_order.len() > NOTE_MEMORY {
                if let Some(old) = self.note_order.pop_front() {
                    self.notes.remove(&old);
                }
            }
        }
    }

    /// The notification `id` as it is to be shown at `now`.
    fn note_for(&self, id: u64, now: Instant) -> Option<Note> {
        match self.alerts.shown(id)? {
            Shown::Group(g) => Some(text::group_note(g)),
            Shown::Program(live) => {
                let (seen, novelty) = self.notes.get(&id)?;
                let age = now.saturating_duration_since(live.opened);
                let mut note =
                    text::program_note(live, &seen.conn, *novelty, age, &seen.host, &self.caps);
                // Which machine, where it is read first; its buttons act on that host only
                // (the menu offers "everywhere" too).
                if self.remote_hosts.contains(&seen.host) {
                    note.summary = format!("{} · on {}", note.summary, text::host(&seen.host));
                    note.actions = text::buttons_on_host(&seen.conn, &seen.host, &self.caps);
                }
                Some(note)
            }
        }
    }

    /// The applet's own check of the whitelist: the helper filters too, but a config change
    /// takes a moment to reach it (and a remote helper may be older).
    fn whitelisted(&self, host: &str, c: &Connection) -> bool {
        conntrack_tray_helper::filter::whitelisted(&self.settings.config.whitelist_on(host), c)
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

    /// The ssh links now: each remote host's label with the pid of its ssh process.
    pub fn set_links(&mut self, remote: Vec<(String, Option<u32>)>) {
        self.remote_hosts = remote.iter().map(|(h, _)| h.clone()).collect();
        self.own_pids = remote.iter().filter_map(|(_, p)| *p).collect();
        self.own_ports = remote
            .into_iter()
            .filter_map(|(h, p)| Some((h, crate::own::local_ports(&[p?]))))
            .collect();
    }

    /// Whether `c`, seen on `host`, is the applet's own ssh link: from one of its ssh
    /// processes here, or, on the watched host, to one of their sockets.
    fn own(&self, host: &str, c: &Connection) -> bool {
        if self.remote_hosts.contains(host) {
            // There: sshd's end is its local end, ours the remote one.
            let (Some(ours), Some(sshd)) = (c.remote_port, c.local_port) else {
                return false;
            };
            return self
                .own_ports
                .get(host)
                .is_some_and(|s| s.contains(&(ours, sshd)));
        }
        c.process
            .as_ref()
            .is_some_and(|p| self.own_pids.contains(&p.pid))
    }

    fn on_connection(&mut self, host: &str, c: Connection, now: Instant) -> Vec<Effect> {
        if self.whitelisted(host, &c) || self.settings.config.applet.paused {
            return Vec::new();
        }
        let own = self.own(host, &c);
        // The applet's own link is kept, not counted: "N today" is what the watched did.
        let day = c.ts.get(..10).unwrap_or("").to_string();
        if self.today.0 != day {
            self.today = (day, 0);
        }
        if !own {
            self.today.1 += 1;
        }
        let mut seen = Seen {
            host: host.to_string(),
            conn: c,
            own,
        };
        if let Some(was) = self.learned.binary_changed(&seen.conn) {
            crate::pins::mark_first_seen_change(&mut seen.conn, was);
        }
        // Another binary at a known program's path is news, however known the destination.
        let changed = seen
            .conn
            .process
            .as_ref()
            .is_some_and(|p| p.exe_changed.is_some());
        let mut effects = Vec::new();
        if let Err(e) = self.history.push(seen.clone()) {
            effects.push(Effect::Tell(format!(
                "cannot write the history: {}",
                text::line(&e.to_string())
            )));
        }
        // Its own link is not news: a notice each reconnect would teach to ignore them.
        if own || !self.settings.config.notify.enabled {
            return effects;
        }
        self.unseen = true;
        let novelty = self.learned.learn(&seen.conn);
        self.save_at.get_or_insert(now + SAVE_EVERY);
        let news = changed
            || match self.settings.config.notify.alert_on {
                AlertOn::Every => true,
                AlertOn::NewDestination => novelty != Novelty::Known,
                AlertOn::NewProgram => novelty == Novelty::NewProgram,
            };
        let key = novelty::program_key(&seen.conn);
        let name = text::program(&seen.conn);
        let destination = text::destination(&seen.conn);
        let s = alerts::Seen {
            host: &seen.host,
            key: &key,
            name: &name,
            destination: &destination,
            novelty,
            critical: seen.conn.critical,
            news,
        };
        match self.alerts.decide(&s, now) {
            Decision::Show(id) => {
                if news || !self.notes.contains_key(&id) {
                    self.remember(id, seen, novelty);
                }
                effects.extend(
                    self.note_for(id, now)
                        .map(|note| Effect::Notify { id, note }),
                );
            }
            Decision::Folded(id) => {
                if news {
                    self.remember(id, seen, novelty);
                }
            }
            Decision::Quiet | Decision::Muted => {}
        }
        effects
    }

    /// When [`App::on_tick`] next has something to do (a notification to update or close,
    /// what was learned to write, a lost-events notice due); the main loop sleeps till then.
    pub fn next_due(&self) -> Option<Instant> {
        [self.alerts.next_due(), self.save_at, self.lost.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When something is due (see [`App::next_due`]), and when the config file changed.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = match self.settings.reload_if_changed() {
            Some(Ok(())) => {
                self.alerts
                    .configure(self.settings.config.notify.per_minute);
                vec![Effect::SendConfig]
            }
            Some(Err(e)) => vec![Effect::Tell(format!(
                "{} (the previous settings stay in force)",
                text::line(&e.to_string())
            ))],
            None => Vec::new(),
        };
        let (show, close) = self.alerts.due(now);
        for id in show {
            effects.extend(
                self.note_for(id, now)
                    .map(|note| Effect::Notify { id, note }),
            );
        }
        effects.extend(close.into_iter().map(Effect::Close));
        if self.save_at.is_some_and(|t| t <= now) {
            effects.extend(self.save_learned());
        }
        effects.extend(self.lost.due(now).map(Effect::Tell));
        effects
    }

    /// Writes what was learned (due, or the applet quits).
    pub fn save_learned(&mut self) -> Option<Effect> {
        self.save_at = None;
        self.learned.save().err().map(|e| {
            Effect::Tell(format!(
                "cannot write what was learned: {}",
                text::line(&e.to_string())
            ))
        })
    }

    /// The applet quits: its notifications go with it, and what it learned is kept.
    pub fn on_quit(&mut self) -> Vec<Effect> {
        let mut effects: Vec<Effect> = self
            .alerts
            .on_screen()
            .into_iter()
            .map(Effect::Close)
            .collect();
        effects.extend(self.save_learned());
        effects
    }

    /// The server closed notification `id` (the person dismissed it, or it expired).
    pub fn on_closed(&mut self, id: u64) {
        self.alerts.closed(id);
    }

    fn edit(&mut self, edit: Edit) -> Vec<Effect> {
        match self.settings.apply(&edit) {
            Ok(()) => {
                self.alerts
                    .configure(self.settings.config.notify.per_minute);
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

    /// Pins the hash `c`'s program runs now beside its new whitelist entry (see `pins`);
    /// nothing when the event had no hash.
    fn pin(&mut self, host: Option<String>, c: &Connection) -> Vec<Effect> {
        match crate::pins::pin_of(c) {
            Some((program, sha256)) => self.edit(Edit::Pin {
                host,
                program,
                sha256,
            }),
            None => Vec::new(),
        }
    }

    fn act_on(&mut self, seen: &Seen, action: RecentAction, now: Instant) -> Vec<Effect> {
        let c = &seen.conn;
        match action {
            RecentAction::WhitelistProgram => {
                // The absolute exe path, not a bare name another program could also have.
                match text::whitelistable_exe(c) {
                    Some(exe) => {
                        let mut effects = self.edit(Edit::WhitelistProcess(exe.to_string()));
                        effects.extend(self.pin(None, c));
                        effects
                    }
                    None => vec![Effect::Tell(NOT_WHITELISTABLE.into())],
                }
            }
            RecentAction::WhitelistRemote => {
                self.edit(Edit::WhitelistRemote(c.remote_ip.to_string()))
            }
            RecentAction::Mute => {
                if c.process.is_some() {
                    self.alerts.mute(None, &novelty::program_key(c), now + MUTE);
                }
                Vec::new()
            }
            RecentAction::WhitelistProgramOnHost => match text::whitelistable_exe(c) {
                Some(exe) => {
                    let mut effects = self.edit(Edit::WhitelistProcessOn {
                        host: seen.host.clone(),
                        process: exe.to_string(),
                    });
                    effects.extend(self.pin(Some(seen.host.clone()), c));
                    effects
                }
                None => vec![Effect::Tell(NOT_WHITELISTABLE.into())],
            },
            RecentAction::WhitelistRemoteOnHost => self.edit(Edit::WhitelistRemoteOn {
                host: seen.host.clone(),
                remote: c.remote_ip.to_string(),
            }),
            RecentAction::MuteOnHost => {
                if c.process.is_some() {
                    let key = novelty::program_key(c);
                    self.alerts.mute(Some(&seen.host), &key, now + MUTE);
                }
                Vec::new()
            }
            RecentAction::Copy => vec![Effect::Copy(text::details(seen))],
        }
    }

    /// The helper of `link` stopped and will be started again through pkexec in `wait`: the
    /// person is told first (the prompt must not come out of the blue) and may decline.
    pub fn restart_notice(&mut self, link: usize, why: &str, wait: Duration) -> Effect {
        let id = self.alerts.new_id();
        self.restart_notes.insert(id, link);
        let mut actions = Vec::new();
        if self.caps.actions {
            actions.push((ACTION_RESTART.to_string(), "Start now".to_string()));
            actions.push((ACTION_NO_RESTART.to_string(), "Don't restart".to_string()));
        }
        Effect::Notify {
            id,
            note: Note {
                summary: format!("Monitoring stopped: the helper {why}"),
                body: format!(
                    "Starting it again needs your password; the prompt comes in {} s. Until then nothing is watched.",
                    wait.as_secs()
                ),
                critical: false,
                icon: "dialog-warning",
                actions,
                expire: wait,
            },
        }
    }

    /// A button of notification `id` (or its body, `default`).
    pub fn on_action(&mut self, id: u64, action: &str, now: Instant) -> Vec<Effect> {
        if let Some(link) = self.restart_notes.remove(&id) {
            return match action {
                ACTION_RESTART => vec![Effect::RestartNow(link)],
                ACTION_NO_RESTART => vec![Effect::Hold(link)],
                _ => {
                    self.restart_notes.insert(id, link);
                    Vec::new()
                }
            };
        }
        let Some((seen, _)) = self.notes.get(&id).cloned() else {
            return Vec::new();
        };
        self.unseen = false;
        match action {
            // The body: the window, at this connection, with all its details.
            notify::ACTION_DETAILS => vec![Effect::ShowWindow(Some(
                crate::window::model::GroupKey::of(&seen),
            ))],
            notify::ACTION_WL_PROGRAM => self.act_on(&seen, RecentAction::WhitelistProgram, now),
            notify::ACTION_WL_REMOTE => self.act_on(&seen, RecentAction::WhitelistRemote, now),
            notify::ACTION_MUTE => self.act_on(&seen, RecentAction::Mute, now),
            notify::ACTION_WL_PROGRAM_ON_HOST => {
                self.act_on(&seen, RecentAction::WhitelistProgramOnHost, now)
            }
            notify::ACTION_WL_REMOTE_ON_HOST => {
                self.act_on(&seen, RecentAction::WhitelistRemoteOnHost, now)
            }
            notify::ACTION_MUTE_ON_HOST => self.act_on(&seen, RecentAction::MuteOnHost, now),
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
            tray::WINDOW => vec![Effect::ShowWindow(None)],
            tray::FORGET => {
                self.learned.forget();
                self.save_learned().into_iter().collect()
            }
            tray::QUIT => vec![Effect::Quit],
            _ => Vec::new(),
        }
    }

    /// The mutes in force at `now`, for the window: host ("" for every host), program key,
    /// and when it ends (seconds since 1970: the window compares with its own clock).
    pub fn mutes(&self, now: Instant) -> Vec<(String, String, u64)> {
        let wall = std::time::SystemTime::now();
        self.alerts
            .mutes(now)
            .into_iter()
            .map(|(h, k, left)| {
                let until = (wall + left)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (h.unwrap_or_default(), k, until)
            })
            .collect()
    }

    /// Ends the mute of `program` on `host` ("" for every host).
    pub fn unmute(&mut self, host: &str, program: &str) {
        let host = Some(host).filter(|h| !h.is_empty());
        self.alerts.unmute(host, program);
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
                    on: self
                        .remote_hosts
                        .contains(&s.host)
                        .then(|| text::host(&s.host)),
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
mod tests;
