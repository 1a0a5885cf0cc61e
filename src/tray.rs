//! The tray icon: its state, and its menu as data.
//!
//! [`menu`] is a pure function from what the applet knows to a list of entries; the tray is
//! rebuilt from it whenever that changes, never patched item by item. [`Tray`] turns the
//! entries into a `tray-icon` (ksni backend: StatusNotifierItem and com.canonical.dbusmenu
//! over D-Bus, no GTK); [`has_watcher`] tells whether the session has a tray to show it in.

use tray_icon::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};

use crate::icons;

/// What the icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IconState {
    Monitoring,
    /// A connection was reported that the person has not looked at yet.
    Alert,
    Paused,
    /// No helper is running (stopped, refused, or restarting).
    Stopped,
}

/// One menu entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Label(String),
    Separator,
    Action {
        id: String,
        label: String,
    },
    Check {
        id: String,
        label: String,
        checked: bool,
    },
    Sub {
        label: String,
        items: Vec<Entry>,
    },
}

/// A recent connection as the menu shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentView {
    pub label: String,
    pub program: Option<String>,
    pub remote: String,
}

/// Everything the menu depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub status: String,
    pub recent: Vec<RecentView>,
    pub can_start: bool,
    pub paused: bool,
    pub notifications: bool,
    pub show_unknown: bool,
    pub critical_only: bool,
    pub all_protocols: bool,
    pub autostart: bool,
}

pub const PAUSE: &str = "pause";
pub const NOTIFICATIONS: &str = "notifications";
pub const SHOW_UNKNOWN: &str = "show-unknown";
pub const CRITICAL_ONLY: &str = "critical-only";
pub const ALL_PROTOCOLS: &str = "all-protocols";
pub const AUTOSTART: &str = "autostart";
pub const START: &str = "start";
pub const EDIT: &str = "edit";
pub const LOG: &str = "log";
pub const QUIT: &str = "quit";

/// A click on a recent connection's submenu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentAction {
    WhitelistProgram,
    WhitelistRemote,
    Mute,
    Copy,
}

pub fn recent_id(i: usize, a: RecentAction) -> String {
    let a = match a {
        RecentAction::WhitelistProgram => "wl-program",
        RecentAction::WhitelistRemote => "wl-remote",
        RecentAction::Mute => "mute",
        RecentAction::Copy => "copy",
    };
    format!("recent/{i}/{a}")
}

pub fn parse_recent_id(id: &str) -> Option<(usize, RecentAction)> {
    let mut parts = id.strip_prefix("recent/")?.split('/');
    let i = parts.next()?.parse().ok()?;
    let a = match parts.next()? {
        "wl-program" => RecentAction::WhitelistProgram,
        "wl-remote" => RecentAction::WhitelistRemote,
        "mute" => RecentAction::Mute,
        "copy" => RecentAction::Copy,
        _ => return None,
    };
    Some((i, a))
}

fn check(id: &str, label: &str, checked: bool) -> Entry {
    Entry::Check {
        id: id.into(),
        label: label.into(),
        checked,
    }
}

fn action(id: &str, label: &str) -> Entry {
    Entry::Action {
        id: id.into(),
        label: label.into(),
    }
}

/// The menu for a view.
pub fn menu(v: &View) -> Vec<Entry> {
    let mut items = vec![Entry::Label(v.status.clone())];
    if v.can_start {
        items.push(action(START, "Start monitoring…"));
    }
    items.push(Entry::Separator);
    let recent: Vec<Entry> = if v.recent.is_empty() {
        vec![Entry::Label("nothing yet".into())]
    } else {
        v.recent
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut sub = Vec::new();
                if let Some(p) = &r.program {
                    sub.push(action(
                        &recent_id(i, RecentAction::WhitelistProgram),
                        &format!("Whitelist {p}"),
                    ));
                }
                sub.push(action(
                    &recent_id(i, RecentAction::WhitelistRemote),
                    &format!("Whitelist {}", r.remote),
                ));
                if r.program.is_some() {
                    sub.push(action(&recent_id(i, RecentAction::Mute), "Mute 1 h"));
                }
                sub.push(action(&recent_id(i, RecentAction::Copy), "Copy details"));
                Entry::Sub {
                    label: r.label.clone(),
                    items: sub,
                }
            })
            .collect()
    };
    items.push(Entry::Sub {
        label: "Recent connections".into(),
        items: recent,
    });
    items.push(Entry::Separator);
    items.push(check(PAUSE, "Pause monitoring", v.paused));
    items.push(check(NOTIFICATIONS, "Notifications", v.notifications));
    items.push(check(
        SHOW_UNKNOWN,
        "Show unknown processes",
        v.show_unknown,
    ));
    items.push(check(CRITICAL_ONLY, "Critical ports only", v.critical_only));
    items.push(check(ALL_PROTOCOLS, "All protocols", v.all_protocols));
    items.push(check(AUTOSTART, "Start on login", v.autostart));
    items.push(Entry::Separator);
    items.push(action(EDIT, "Edit whitelist…"));
    items.push(action(LOG, "Open log"));
    items.push(action(QUIT, "Quit"));
    items
}

/// The `tray-icon` menu for `entries`.
fn build_muda(entries: &[Entry]) -> Result<Menu, tray_icon::menu::Error> {
    let menu = Menu::new();
    append_entries(entries, &mut |item| menu.append(item))?;
    Ok(menu)
}

/// Turns entries into `tray-icon` items in order, handing each to `append` (a menu's or a
/// submenu's append: the one conversion for both levels). A submenu is filled before it is
/// appended.
fn append_entries(
    entries: &[Entry],
    append: &mut dyn FnMut(&dyn IsMenuItem) -> Result<(), tray_icon::menu::Error>,
) -> Result<(), tray_icon::menu::Error> {
    for e in entries {
        match e {
            Entry::Label(l) => append(&MenuItem::new(l, false, None))?,
            Entry::Separator => append(&PredefinedMenuItem::separator())?,
            Entry::Action { id, label } => {
                append(&MenuItem::with_id(id.as_str(), label, true, None))?
            }
            Entry::Check { id, label, checked } => append(&CheckMenuItem::with_id(
                id.as_str(),
                label,
                true,
                *checked,
                None,
            ))?,
            Entry::Sub { label, items } => {
                let sub = Submenu::new(label, true);
                append_entries(items, &mut |item| sub.append(item))?;
                append(&sub)?;
            }
        }
    }
    Ok(())
}

/// True when this session has a StatusNotifierWatcher (a tray to show the icon in).
pub fn has_watcher(bus: &zbus::blocking::Connection) -> bool {
    let Ok(proxy) = zbus::blocking::fdo::DBusProxy::new(bus) else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from("org.kde.StatusNotifierWatcher") else {
        return false;
    };
    proxy.name_has_owner(name).unwrap_or(false)
}

/// The live tray icon.
pub struct Tray {
    icon: tray_icon::TrayIcon,
    shown: Option<(Vec<Entry>, IconState)>,
}

impl Tray {
    pub fn new() -> Result<Tray, String> {
        let icon = tray_icon::TrayIconBuilder::new()
            .with_id("conntrack-tray")
            .with_title("conntrack-tray")
            .with_tooltip("conntrack-tray")
            .with_icon(Self::icon(IconState::Stopped)?)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Tray { icon, shown: None })
    }

    /// The state's art (`icons`) at its smallest size, 22 px, the one most panels ask for:
    /// tray-icon serves a single pixmap.
    fn icon(state: IconState) -> Result<tray_icon::Icon, String> {
        let art = icons::icon(state).map_err(|e| e.to_string())?;
        let small = art.into_iter().next().ok_or("no icon art")?;
        tray_icon::Icon::from_rgba(small.data, small.width, small.height).map_err(|e| e.to_string())
    }

    /// Shows the menu and icon for `entries` and `state`, if they changed.
    pub fn show(
        &mut self,
        entries: Vec<Entry>,
        state: IconState,
        tooltip: &str,
    ) -> Result<(), String> {
        if self.shown.as_ref() == Some(&(entries.clone(), state)) {
            return Ok(());
        }
        let menu = build_muda(&entries).map_err(|e| e.to_string())?;
        self.icon.set_menu(Some(Box::new(menu)));
        self.icon
            .set_icon(Some(Self::icon(state)?))
            .map_err(|e| e.to_string())?;
        self.icon
            .set_tooltip(Some(tooltip))
            .map_err(|e| e.to_string())?;
        self.shown = Some((entries, state));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[Entry]) -> Vec<String> {
        items
            .iter()
            .map(|e| match e {
                Entry::Label(l) => l.clone(),
                Entry::Separator => "-".into(),
                Entry::Action { label, .. }
                | Entry::Check { label, .. }
                | Entry::Sub { label, .. } => label.clone(),
            })
            .collect()
    }

    #[test]
    fn the_menu_has_status_recent_toggles_and_actions_in_order() {
        let v = View {
            status: "Monitoring localhost — 3 today, 0 lost".into(),
            recent: vec![RecentView {
                label: "curl → 9.9.9.9:443".into(),
                program: Some("curl".into()),
                remote: "9.9.9.9".into(),
            }],
            notifications: true,
            ..Default::default()
        };
        let m = menu(&v);
        assert_eq!(
            labels(&m),
            vec![
                "Monitoring localhost — 3 today, 0 lost",
                "-",
                "Recent connections",
                "-",
                "Pause monitoring",
                "Notifications",
                "Show unknown processes",
                "Critical ports only",
                "All protocols",
                "Start on login",
                "-",
                "Edit whitelist…",
                "Open log",
                "Quit"
            ]
        );
        let Entry::Sub { items, .. } = &m[2] else {
            panic!("recent submenu")
        };
        let Entry::Sub { label, items } = &items[0] else {
            panic!("one recent")
        };
        assert_eq!(label, "curl → 9.9.9.9:443");
        assert_eq!(
            labels(items),
            vec![
                "Whitelist curl",
                "Whitelist 9.9.9.9",
                "Mute 1 h",
                "Copy details"
            ]
        );
        assert!(m.contains(&Entry::Check {
            id: NOTIFICATIONS.into(),
            label: "Notifications".into(),
            checked: true
        }));
    }

    #[test]
    fn start_monitoring_is_offered_only_when_it_can_be() {
        assert!(!labels(&menu(&View::default())).contains(&"Start monitoring…".to_string()));
        let v = View {
            can_start: true,
            ..Default::default()
        };
        assert_eq!(labels(&menu(&v))[1], "Start monitoring…");
    }

    #[test]
    fn recent_ids_round_trip() {
        for a in [
            RecentAction::WhitelistProgram,
            RecentAction::WhitelistRemote,
            RecentAction::Mute,
            RecentAction::Copy,
        ] {
            assert_eq!(parse_recent_id(&recent_id(7, a)), Some((7, a)));
        }
        assert_eq!(parse_recent_id("recent/x/mute"), None);
        assert_eq!(parse_recent_id("quit"), None);
    }
}
