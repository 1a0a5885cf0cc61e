//! The user's configuration: `$XDG_CONFIG_HOME/conntrack-tray/config.toml`.
//!
//! The same schema as the helper's, plus `[notify]`, `[remote]` and `[applet]`. Edits from the
//! menu and from notification buttons go through `toml_edit`, so the user's comments and layout
//! survive, and every write is private and atomic (`files::write_atomically`: 0600, a temporary
//! file in the same directory, then rename); a config that is a link is written through to its
//! target, and stays a link.
//!
//! A file that does not parse is reported with its line and key and is never overwritten. When
//! it is broken at start, nothing is whitelisted until it is fixed ([`Settings::distrusting`]):
//! a broken file means nothing trusted, never the defaults' trust. When it breaks later, the
//! last good configuration stays in force.

use std::path::{Path, PathBuf};

use conntrack_tray_helper::config::{
    ConfigError, Critical, Filter, Monitor, Names, ProtoSel, Whitelist, DEFAULT_TOML,
};
use conntrack_tray_helper::event::Proto;
use conntrack_tray_helper::Config;
use serde::{Deserialize, Serialize};
use toml_edit::{Array, DocumentMut, Item, Value};

use crate::files;

/// The applet's own default sections, appended to the helper's documented default.
pub const APPLET_TOML: &str = include_str!("../conf/applet.toml");

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub monitor: Monitor,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub whitelist: Whitelist,
    #[serde(default)]
    pub critical: Critical,
    #[serde(default)]
    pub names: Names,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub remote: RemoteConfig,
    #[serde(default)]
    pub applet: AppletConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub enabled: bool,
    pub alert_on: AlertOn,
    pub per_minute: u32,
    /// Read and ignored: files of older versions have it, and an unknown key would make
    /// the whole file unreadable (a program's notification is now updated in place instead).
    #[serde(skip_serializing)]
    pub coalesce_secs: Option<u64>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            alert_on: AlertOn::NewDestination,
            per_minute: 5,
            coalesce_secs: None,
        }
    }
}

/// Which connections interrupt the person (the others go to the history and the menu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertOn {
    /// A program's first connection ever.
    NewProgram,
    /// That, and a known program's first contact with a destination.
    NewDestination,
    /// Every reported connection (still one notification per program on screen).
    Every,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    pub hosts: Vec<String>,
    /// The helper's path on the remote hosts, when not the .deb's.
    pub helper: Option<String>,
    /// Whitelist entries for one watched host only, by its label (the host as configured):
    /// `[remote.on."nas"] processes = ["/usr/bin/curl"]`. They add to `[whitelist]` there.
    pub on: std::collections::BTreeMap<String, Whitelist>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppletConfig {
    pub paused: bool,
}

impl UserConfig {
    /// The whitelist on `host`: `[whitelist]` and that host's `[remote.on]` entries.
    pub fn whitelist_on(&self, host: &str) -> Whitelist {
        let mut w = self.whitelist.clone();
        if let Some(extra) = self.remote.on.get(host) {
            w.processes.extend(extra.processes.iter().cloned());
            w.remote.extend(extra.remote.iter().cloned());
            w.hosts.extend(extra.hosts.iter().cloned());
            w.program_hosts.extend(extra.program_hosts.iter().cloned());
            w.started_by.extend(extra.started_by.iter().cloned());
            w.pinned.extend(extra.pinned.iter().cloned());
        }
        w
    }

    /// The part the helper on `host` filters with.
    pub fn helper_config_on(&self, host: &str) -> Config {
        Config {
            whitelist: self.whitelist_on(host),
            ..self.helper_config()
        }
    }

    /// The part the helper filters with.
    pub fn helper_config(&self) -> Config {
        Config {
            monitor: self.monitor.clone(),
            filter: self.filter.clone(),
            whitelist: self.whitelist.clone(),
            critical: self.critical.clone(),
            names: self.names.clone(),
        }
    }

    pub fn parse(src: &str, origin: &str) -> Result<UserConfig, ConfigError> {
        toml::from_str(src).map_err(|e| ConfigError::from_toml(src, origin, &e))
    }

    pub fn all_protocols(&self) -> bool {
        self.monitor.protocols.contains(&ProtoSel::All)
    }
}

/// The text of a new user file: the documented defaults of both parts.
pub fn default_document() -> String {
    format!("{DEFAULT_TOML}{APPLET_TOML}")
}

/// One change the person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Add an absolute exe path (or a name) to `whitelist.processes`.
    WhitelistProcess(String),
    /// Add an address to `whitelist.remote`.
    WhitelistRemote(String),
    /// Add a name to `whitelist.hosts`.
    WhitelistHost(String),
    /// Add an exe path to `remote.on.HOST.processes`: on that watched host only.
    WhitelistProcessOn {
        host: String,
        process: String,
    },
    /// Add an address to `remote.on.HOST.remote`.
    WhitelistRemoteOn {
        host: String,
        remote: String,
    },
    /// Add `{ program, parent }` to `whitelist.started_by` (or that of `remote.on.HOST`): the
    /// program when this very parent forked it.
    WhitelistStartedBy {
        host: Option<String>,
        program: String,
        parent: String,
    },
    /// Pin the hash a program has now (`whitelist.pinned`, or that of `remote.on.HOST`).
    Pin {
        host: Option<String>,
        program: String,
        sha256: String,
    },
    SetShowUnknown(bool),
    SetCriticalOnly(bool),
    SetAllProtocols(bool),
    SetNotifications(bool),
    SetPaused(bool),
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: `{key}` is not what conntrack-tray expects there; fix it by hand")]
    Shape { path: String, key: String },
}

/// The user's config file and its last good contents.
pub struct Settings {
    path: PathBuf,
    pub config: UserConfig,
    /// The file's modification time when last read or written, to notice outside edits.
    seen: Option<std::time::SystemTime>,
}

fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Settings {
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "conntrack-tray")
            .map(|d| d.config_dir().join("config.toml"))
    }

    /// Loads the file; a missing file means the defaults (it is created on the first edit).
    /// The applet's own config directory, when it exists wider, is made private at once.
    pub fn load(path: PathBuf) -> Result<Settings, SettingsError> {
        if let Some(dir) = path.parent().filter(|_| is_in_own_dir(&path)) {
            // A failure (a read-only home) shows at the first write; it breaks no reading.
            let _ = files::tighten_dir(dir);
        }
        let config = match std::fs::read_to_string(&path) {
            Ok(src) => UserConfig::parse(&src, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UserConfig::default(),
            Err(source) => {
                return Err(SettingsError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(Settings {
            seen: mtime(&path),
            path,
            config,
        })
    }

    /// For a file that could not be read or parsed: nothing is whitelisted (spelled out, not
    /// taken from the defaults: whatever they come to trust, a broken file trusts nothing),
    /// the other settings are the defaults. `apply` still refuses to touch the file, and an
    /// edit that fixes it is picked up by [`Settings::reload_if_changed`].
    pub fn distrusting(path: PathBuf) -> Settings {
        Settings {
            seen: mtime(&path),
            path,
            config: UserConfig {
                whitelist: Whitelist {
                    processes: Vec::new(),
                    remote: Vec::new(),
                    hosts: Vec::new(),
                    program_hosts: Vec::new(),
                    started_by: Vec::new(),
                    pinned: Vec::new(),
                },
                ..UserConfig::default()
            },
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file; on an error the last good configuration stays.
    pub fn reload(&mut self) -> Result<(), SettingsError> {
        self.seen = mtime(&self.path);
        let fresh = Settings::load(self.path.clone())?;
        self.config = fresh.config;
        Ok(())
    }

    /// Re-reads the file if someone changed it since it was last read or written (the person
    /// chose "Edit whitelist…"); `None` when it did not change.
    pub fn reload_if_changed(&mut self) -> Option<Result<(), SettingsError>> {
        if mtime(&self.path) == self.seen {
            return None;
        }
        Some(self.reload())
    }

    /// Applies an edit to the file, keeping its comments, and writes it atomically. Refuses
    /// (and leaves the file alone) when the file on disk does not parse.
    pub fn apply(&mut self, edit: &Edit) -> Result<(), SettingsError> {
        self.apply_with(|doc| apply_to_document(doc, edit))
    }

    /// [`Settings::apply`] with any change to the document (the window's rule removal); the
    /// error of `change` names the key whose shape was unexpected.
    pub fn apply_with(
        &mut self,
        change: impl FnOnce(&mut DocumentMut) -> Result<(), String>,
    ) -> Result<(), SettingsError> {
        let origin = self.path.display().to_string();
        let src = match std::fs::read_to_string(&self.path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => default_document(),
            Err(source) => {
                return Err(SettingsError::Io {
                    path: origin,
                    source,
                })
            }
        };
        // The file must be valid as it is: never build on (and so destroy) a broken file.
        UserConfig::parse(&src, &origin)?;
        let mut doc: DocumentMut = src.parse().map_err(|e: toml_edit::TomlError| {
            let span = e.span().map(|s| s.start).unwrap_or(0);
            SettingsError::Shape {
                path: origin.clone(),
                key: format!("byte {span}"),
            }
        })?;
        change(&mut doc).map_err(|key| SettingsError::Shape {
            path: origin.clone(),
            key,
        })?;
        let text = doc.to_string();
        let config = UserConfig::parse(&text, &origin)?;
        own_config_dir(&self.path)
            .and_then(|()| files::write_atomically(&self.path, text.as_bytes()))
            .map_err(|source| SettingsError::Io {
                path: origin,
                source,
            })?;
        self.seen = mtime(&self.path);
        self.config = config;
        Ok(())
    }
}

fn table<'a>(doc: &'a mut DocumentMut, name: &str) -> Result<&'a mut toml_edit::Table, String> {
    doc.entry(name)
        .or_insert_with(|| Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| name.to_string())
}

/// `[remote.on."HOST"]`, made when missing (`remote.on` itself stays implicit).
fn host_table<'a>(
    doc: &'a mut DocumentMut,
    host: &str,
) -> Result<&'a mut toml_edit::Table, String> {
    let on = table(doc, "remote")?
        .entry("on")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| "remote.on".to_string())?;
    on.entry(host)
        .or_insert_with(|| Item::Table(toml_edit::Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("remote.on.{host}"))
}

fn push_unique(t: &mut toml_edit::Table, key: &str, value: &str, path: &str) -> Result<(), String> {
    let item = t
        .entry(key)
        .or_insert_with(|| Item::Value(Value::Array(Array::new())));
    let arr = item.as_array_mut().ok_or_else(|| path.to_string())?;
    if !arr.iter().any(|v| v.as_str() == Some(value)) {
        arr.push(value);
    }
    Ok(())
}

fn set_bool(t: &mut toml_edit::Table, key: &str, value: bool) {
    match t.get_mut(key).and_then(|i| i.as_value_mut()) {
        // Keep the comments around the old value.
        Some(v) => {
            let decor = v.decor().clone();
            *v = Value::from(value);
            *v.decor_mut() = decor;
        }
        None => {
            t.insert(key, toml_edit::value(value));
        }
    }
}

/// Applies one edit; the error names the key whose shape was unexpected.
pub fn apply_to_document(doc: &mut DocumentMut, edit: &Edit) -> Result<(), String> {
    match edit {
        Edit::WhitelistProcess(p) => push_unique(
            table(doc, "whitelist")?,
            "processes",
            p,
            "whitelist.processes",
        ),
        Edit::WhitelistRemote(r) => {
            push_unique(table(doc, "whitelist")?, "remote", r, "whitelist.remote")
        }
        Edit::WhitelistHost(h) => {
            push_unique(table(doc, "whitelist")?, "hosts", h, "whitelist.hosts")
        }
        Edit::WhitelistProcessOn { host, process } => push_unique(
            host_table(doc, host)?,
            "processes",
            process,
            "remote.on.processes",
        ),
        Edit::WhitelistRemoteOn { host, remote } => {
            push_unique(host_table(doc, host)?, "remote", remote, "remote.on.remote")
        }
        Edit::WhitelistStartedBy {
            host,
            program,
            parent,
        } => {
            let (t, path) = match host {
                Some(h) => (host_table(doc, h)?, "remote.on.started_by"),
                None => (table(doc, "whitelist")?, "whitelist.started_by"),
            };
            crate::started_by::push(t, program, parent, path)
        }
        Edit::Pin {
            host,
            program,
            sha256,
        } => match host {
            Some(h) => crate::pins::pin(host_table(doc, h)?, program, sha256, "remote.on.pinned"),
            None => crate::pins::pin(
                table(doc, "whitelist")?,
                program,
                sha256,
                "whitelist.pinned",
            ),
        },
        Edit::SetShowUnknown(b) => {
            set_bool(table(doc, "filter")?, "show_unknown", *b);
            Ok(())
        }
        Edit::SetCriticalOnly(b) => {
            set_bool(table(doc, "filter")?, "critical_only", *b);
            Ok(())
        }
        Edit::SetNotifications(b) => {
            set_bool(table(doc, "notify")?, "enabled", *b);
            Ok(())
        }
        Edit::SetPaused(b) => {
            set_bool(table(doc, "applet")?, "paused", *b);
            Ok(())
        }
        Edit::SetAllProtocols(all) => {
            let t = table(doc, "monitor")?;
            let mut arr = Array::new();
            arr.push(if *all {
                "all".to_string()
            } else {
                Proto::Tcp.to_string()
            });
            match t.get_mut("protocols").and_then(|i| i.as_value_mut()) {
                Some(v) => {
                    let decor = v.decor().clone();
                    *v = Value::Array(arr);
                    *v.decor_mut() = decor;
                }
                None => {
                    t.insert("protocols", toml_edit::value(arr));
                }
            }
            Ok(())
        }
    }
}

/// Makes the applet's own config directory (`~/.config/conntrack-tray`) private when `path`
/// is in it; a directory given with `--config` is not the applet's, and is only created when
/// missing (by `files::write_atomically`).
fn own_config_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if is_in_own_dir(path) => files::own_dir(dir),
        _ => Ok(()),
    }
}

/// Whether `path` is in the applet's own config directory.
fn is_in_own_dir(path: &Path) -> bool {
    let own = Settings::default_path();
    path.parent().is_some() && path.parent() == own.as_deref().and_then(Path::parent)
}

/// The XDG autostart entry that "Start on login" writes or removes.
pub fn autostart_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|b| b.config_dir().join("autostart/conntrack-tray.desktop"))
}

/// The autostart entry, the same file `make install` ships (desktop-file-validate checks it).
pub const AUTOSTART_DESKTOP: &str = include_str!("../desktop/conntrack-tray-autostart.desktop");

pub fn set_autostart(on: bool) -> std::io::Result<()> {
    let Some(path) = autostart_path() else {
        return Err(std::io::Error::other("no home directory"));
    };
    if on {
        files::write_atomically(&path, AUTOSTART_DESKTOP.as_bytes())
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

pub fn autostart_enabled() -> bool {
    autostart_path().is_some_and(|p| p.exists())
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
