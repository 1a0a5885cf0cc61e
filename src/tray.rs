//! The tray icon: its state, and its menu as data.
//!
//! [`menu`] is a pure function from what the applet knows to a list of entries; the tray is
//! rebuilt from it whenever that changes, never patched item by item. [`Tray`] serves the
//! entries and the state's icon (`icons`) with ksni: a StatusNotifierItem and its
//! com.canonical.dbusmenu over D-Bus, in pure Rust, no GTK. It uses ksni itself rather than
//! tray-icon's ksni backend for the StatusNotifierItem's own methods: a left click
//! (Activate) opens the connections window, the menu stays on the right click. [`has_watcher`] tells whether the session has a tray to show it in.

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
    /// The watched host it was seen on, when not this machine.
    pub on: Option<String>,
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
/// "Show connections…", and a left click on the icon.
pub const WINDOW: &str = "window";
pub const FORGET: &str = "forget";
pub const QUIT: &str = "quit";

/// A click on a recent connection's submenu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecentAction {
    WhitelistProgram,
    WhitelistRemote,
    Mute,
    /// The same, on the watched host the connection was seen on only.
    WhitelistProgramOnHost,
    WhitelistRemoteOnHost,
    MuteOnHost,
    Copy,
}

pub fn recent_id(i: usize, a: RecentAction) -> String {
    let a = match a {
        RecentAction::WhitelistProgram => "wl-program",
        RecentAction::WhitelistRemote => "wl-remote",
        RecentAction::Mute => "mute",
        RecentAction::WhitelistProgramOnHost => "wl-program-here",
        RecentAction::WhitelistRemoteOnHost => "wl-remote-here",
        RecentAction::MuteOnHost => "mute-here",
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
        "wl-program-here" => RecentAction::WhitelistProgramOnHost,
        "wl-remote-here" => RecentAction::WhitelistRemoteOnHost,
        "mute-here" => RecentAction::MuteOnHost,
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
                // Seen on a watched host: each rule for that host, or everywhere.
                let (here, everywhere) = match &r.on {
                    Some(h) => (format!(" on {h}"), " everywhere"),
                    None => (String::new(), ""),
                };
                let both = |sub: &mut Vec<Entry>, on, all, label: &str| {
                    if r.on.is_some() {
                        sub.push(action(&recent_id(i, on), &format!("{label}{here}")));
                    }
                    sub.push(action(&recent_id(i, all), &format!("{label}{everywhere}")));
                };
                if let Some(p) = &r.program {
                    both(
                        &mut sub,
                        RecentAction::WhitelistProgramOnHost,
                        RecentAction::WhitelistProgram,
                        &format!("Whitelist {p}"),
                    );
                }
                both(
                    &mut sub,
                    RecentAction::WhitelistRemoteOnHost,
                    RecentAction::WhitelistRemote,
                    &format!("Whitelist {}", r.remote),
                );
                if r.program.is_some() {
                    both(
                        &mut sub,
                        RecentAction::MuteOnHost,
                        RecentAction::Mute,
                        "Mute 1 h",
                    );
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
    items.push(action(WINDOW, "Show connections…"));
    items.push(action(FORGET, "Forget what was learned"));
    items.push(action(QUIT, "Quit"));
    items
}

/// A dbusmenu label for `text`: in dbusmenu an underscore marks the next character as the
/// access key and is not shown, so a program name's own underscores are doubled to be shown.
fn label(text: &str) -> String {
    text.replace('_', "__")
}

/// Text for the tooltip's description, which hosts may render as a subset of HTML: `text`
/// with its markup characters as entities (the names in it are outside strings).
fn markup_free(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The ksni menu for `entries`: each item that can be clicked sends its id to the tray's
/// channel, for the main loop.
fn ksni_menu(entries: &[Entry]) -> Vec<ksni::MenuItem<Item>> {
    use ksni::menu::{CheckmarkItem, StandardItem, SubMenu};
    let clicks = |id: &str| {
        let id = id.to_string();
        Box::new(move |item: &mut Item| item.clicked(&id)) as Box<dyn Fn(&mut Item) + Send>
    };
    entries
        .iter()
        .map(|e| match e {
            Entry::Label(l) => StandardItem {
                label: label(l),
                enabled: false,
                ..Default::default()
            }
            .into(),
            Entry::Separator => ksni::MenuItem::Separator,
            Entry::Action { id, label: l } => StandardItem {
                label: label(l),
                activate: clicks(id),
                ..Default::default()
            }
            .into(),
            Entry::Check {
                id,
                label: l,
                checked,
            } => CheckmarkItem {
                label: label(l),
                checked: *checked,
                activate: clicks(id),
                ..Default::default()
            }
            .into(),
            Entry::Sub { label: l, items } => SubMenu {
                label: label(l),
                submenu: ksni_menu(items),
                ..Default::default()
            }
            .into(),
        })
        .collect()
}

/// The icons of every state, decoded once, as StatusNotifierItem pixmaps (ARGB32, network
/// byte order), indexed by [`state_index`].
type Art = [Vec<ksni::Icon>; 4];

fn state_index(state: IconState) -> usize {
    match state {
        IconState::Monitoring => 0,
        IconState::Alert => 1,
        IconState::Paused => 2,
        IconState::Stopped => 3,
    }
}

fn load_art() -> Result<Art, icons::ArtError> {
    let pixmaps = |state| -> Result<Vec<ksni::Icon>, icons::ArtError> {
        Ok(icons::icon(state)?.into_iter().map(argb).collect())
    };
    Ok([
        pixmaps(IconState::Monitoring)?,
        pixmaps(IconState::Alert)?,
        pixmaps(IconState::Paused)?,
        pixmaps(IconState::Stopped)?,
    ])
}

/// An RGBA icon as the ARGB32 pixmap of the StatusNotifierItem spec.
fn argb(icon: icons::Rgba) -> ksni::Icon {
    let mut data = icon.data;
    for px in data.chunks_exact_mut(4) {
        px.rotate_right(1);
    }
    ksni::Icon {
        width: i32::try_from(icon.width).unwrap_or(0),
        height: i32::try_from(icon.height).unwrap_or(0),
        data,
    }
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

/// What the StatusNotifierItem serves; ksni reads it on the host's every request and sends
/// the changes after each [`Tray::show`].
struct Item {
    entries: Vec<Entry>,
    state: IconState,
    tooltip: String,
    art: Art,
    clicks: crossbeam_channel::Sender<String>,
}

impl Item {
    fn clicked(&self, id: &str) {
        // A send fails only when the main loop is gone: the applet is quitting.
        if self.clicks.send(id.to_string()).is_err() {
            eprintln!("conntrack-tray: a menu click came after the applet stopped listening");
        }
    }
}

impl ksni::Tray for Item {
    /// A left click (Activate) opens the connections window; the menu is on the right click.
    const MENU_ON_ACTIVATE: bool = false;

    fn activate(&mut self, _x: i32, _y: i32) {
        self.clicked(WINDOW);
    }

    fn id(&self) -> String {
        "conntrack-tray".into()
    }

    fn title(&self) -> String {
        "conntrack-tray".into()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        self.art[state_index(self.state)].clone()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: "conntrack-tray".into(),
            description: markup_free(&self.tooltip),
            icon_pixmap: self.icon_pixmap(),
            icon_name: String::new(),
        }
    }

    fn menu(&self) -> Vec<ksni::MenuItem<Self>> {
        ksni_menu(&self.entries)
    }
}

/// The live tray icon: a StatusNotifierItem with its dbusmenu, served by ksni on its own bus
/// connection and thread. A click on an entry sends the entry's id to the channel given to
/// [`Tray::new`].
pub struct Tray {
    handle: ksni::blocking::Handle<Item>,
    shown: Option<(Vec<Entry>, IconState, String)>,
}

impl Tray {
    /// Serves the icon (stopped, with an empty menu until the first [`Tray::show`]) whether
    /// or not a tray runs yet: one that starts later picks it up.
    pub fn new(clicks: crossbeam_channel::Sender<String>) -> Result<Tray, String> {
        use ksni::blocking::TrayMethods;
        let art = load_art().map_err(|e| e.to_string())?;
        let item = Item {
            entries: Vec::new(),
            state: IconState::Stopped,
            tooltip: String::new(),
            art,
            clicks,
        };
        let handle = item
            .assume_sni_available(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Tray {
            handle,
            shown: None,
        })
    }

    /// Shows the menu and icon for `entries` and `state`, if they changed.
    pub fn show(
        &mut self,
        entries: Vec<Entry>,
        state: IconState,
        tooltip: &str,
    ) -> Result<(), String> {
        let next = (entries, state, tooltip.to_string());
        if self.shown.as_ref() == Some(&next) {
            return Ok(());
        }
        let (entries, state, tooltip) = next.clone();
        self.handle
            .update(move |item| {
                item.entries = entries;
                item.state = state;
                item.tooltip = tooltip;
            })
            .ok_or("the tray service stopped")?;
        self.shown = Some(next);
        Ok(())
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        self.handle.shutdown().wait();
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
                on: None,
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
                "Show connections…",
                "Forget what was learned",
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
            RecentAction::WhitelistProgramOnHost,
            RecentAction::WhitelistRemoteOnHost,
            RecentAction::MuteOnHost,
            RecentAction::Copy,
        ] {
            assert_eq!(parse_recent_id(&recent_id(7, a)), Some((7, a)));
        }
        assert_eq!(parse_recent_id("recent/x/mute"), None);
        assert_eq!(parse_recent_id("quit"), None);
    }

    #[test]
    fn every_state_has_its_own_pixmaps_in_argb_order() {
        let art = load_art().expect("art");
        for state in [
            IconState::Monitoring,
            IconState::Alert,
            IconState::Paused,
            IconState::Stopped,
        ] {
            let rgba = icons::icon(state).expect("art");
            let pixmaps = &art[state_index(state)];
            assert_eq!(pixmaps.len(), rgba.len());
            for (p, r) in pixmaps.iter().zip(&rgba) {
                assert_eq!((p.width as u32, p.height as u32), (r.width, r.height));
                // The centre pixel's R, G, B, A as A, R, G, B.
                let centre = ((r.height / 2 * r.width + r.width / 2) * 4) as usize;
                assert_eq!(
                    p.data[centre..centre + 4],
                    [
                        r.data[centre + 3],
                        r.data[centre],
                        r.data[centre + 1],
                        r.data[centre + 2]
                    ]
                );
                assert_eq!(p.data[0], 0, "{state:?}: the corner is transparent");
            }
        }
        assert_ne!(art[0][0].data, art[1][0].data);
        assert_ne!(art[2][0].data, art[3][0].data);
    }

    #[test]
    fn labels_show_underscores_and_the_tooltip_no_markup() {
        assert_eq!(label("my_prog → 1.2.3.4"), "my__prog → 1.2.3.4");
        assert_eq!(markup_free("<b>a&b</b>"), "&lt;b&gt;a&amp;b&lt;/b&gt;");
    }
}
