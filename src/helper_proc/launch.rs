//! How a helper is started: through pkexec, directly, or over ssh with the one fixed
//! invocation a sudoers line can pin; where the helper binary is; which remote targets are
//! the same host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `make install` puts the helper, first match wins.
const HELPER_PATHS: [&str; 2] = [
    "/usr/local/libexec/conntrack-tray/conntrack-tray-helper",
    "/usr/libexec/conntrack-tray/conntrack-tray-helper",
];

/// The helper binary: `given` (from `--helper`), else the installed one, else the one next
/// to this binary.
pub fn helper_path(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    if let Some(p) = HELPER_PATHS.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return p;
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("conntrack-tray-helper")))
        .unwrap_or_else(|| PathBuf::from(HELPER_PATHS[0]))
}

/// The remote targets without repeats: `nas`, `ssh://nas`, `ssh://nas:22` and `NAS` are one
/// host (one helper, every event once); the first spelling is kept as the label.
pub fn distinct_targets(targets: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    targets
        .into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && seen.insert(target_key(t)))
        .collect()
}

/// `[ssh://][user@]host[:port]` in one spelling: lower-case host, port 22 left out.
fn target_key(t: &str) -> String {
    let t = t.strip_prefix("ssh://").unwrap_or(t);
    let (user, rest) = match t.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, t),
    };
    let rest = rest
        .strip_suffix(":22")
        .unwrap_or(rest)
        .to_ascii_lowercase();
    match user {
        Some(u) => format!("{u}@{rest}"),
        None => rest,
    }
}

/// Where the remote helper is, unless `[remote] helper` says otherwise: the .deb's place.
pub const REMOTE_HELPER: &str = "/usr/libexec/conntrack-tray/conntrack-tray-helper";

/// ssh never prompts (a prompt nobody sees would hang the link), gives up on a dead link
/// within 45 s, and on a host that does not answer within 10 s.
pub const SSH_OPTIONS: [&str; 8] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=3",
    "-o",
    "ConnectTimeout=10",
];

/// How a helper is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// `pkexec HELPER --format json`: the polkit prompt names the program.
    Pkexec(PathBuf),
    /// The helper itself (when the applet is root, or with --no-pkexec).
    Direct(PathBuf),
    /// `ssh -o BatchMode=yes … USER@HOST sudo -n HELPER --format json`: the one fixed
    /// invocation a sudoers line can pin (see `remote setup`).
    Ssh { target: String, helper: String },
}

impl Launch {
    /// This machine's helper ([`helper_path`]): run directly when `direct` (`--no-pkexec`) or
    /// when the applet already is root, else through pkexec.
    pub fn local(helper: Option<&Path>, direct: bool) -> Launch {
        if direct || nix::unistd::Uid::effective().is_root() {
            Launch::Direct(helper_path(helper))
        } else {
            Launch::Pkexec(helper_path(helper))
        }
    }

    pub fn command(&self) -> Command {
        let mut c = match self {
            Launch::Pkexec(p) => {
                let mut c = Command::new("pkexec");
                c.arg(p);
                c
            }
            Launch::Direct(p) => Command::new(p),
            Launch::Ssh { target, helper } => {
                let mut c = Command::new("ssh");
                c.args(SSH_OPTIONS)
                    .args(["--", target])
                    .args(["sudo", "-n", helper]);
                c
            }
        };
        c.args(["--format", "json"]);
        c
    }

    /// The host name shown for this helper's events.
    pub fn host(&self) -> String {
        match self {
            Launch::Ssh { target, .. } => {
                let t = target.strip_prefix("ssh://").unwrap_or(target);
                t.rsplit('@').next().unwrap_or(t).to_string()
            }
            _ => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into()),
        }
    }
}
