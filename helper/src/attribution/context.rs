//! Where a process runs: its cgroup v2 path and what the path says (the systemd unit, the
//! Flatpak app, the Snap, the container), the container's name from the engine's own state
//! files, and the network namespace.
//!
//! All of it is context for the person, never evidence for a whitelist: a program can move
//! itself into any cgroup whose `cgroup.procs` its user may write, which is its delegated
//! subtree under `user@UID.service`, and name the cgroups it creates there as it likes
//! (`…/user@1000.service/app.slice/docker-<id>.scope`). The kernel lets a process move only
//! with write access to the destination's `cgroup.procs` (and the common ancestor's), and
//! a folder's writer can rename the cgroups inside it, so a cgroup is *established* only when
//! its `cgroup.procs`, its folder and every folder above it up to the cgroup root are root's
//! and writable by no group and no other user: root (or systemd) put the process or one of
//! its parents there. Anything else is `claimed`. A state file not owned by root gives a
//! claimed name; a rootless engine's, in the user's home, is not read at all (see
//! `Contexts::container_name`).
//!
//! Cost: read once per process description (the process cache keeps it, see `procfs`), and
//! the per-path part (the ownership checks, the state files) once per cgroup path, so a burst
//! of flows from one program costs nothing more.
//!
//! The parsing is pure ([`unified_path`], [`parse`], [`claimed`]); [`Contexts`] is the thin
//! reader over roots that tests replace with folders of their own.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::event::{Container, Context};

/// A cgroup path longer than this (PATH_MAX) is not believed: the kernel prints none.
pub const PATH_LIMIT: usize = 4096;
/// How much of `/proc/PID/cgroup` is read (one line per v1 hierarchy in hybrid mode).
const CGROUP_FILE_LIMIT: u64 = 128 * 1024;
/// How much of an engine's state file is read.
const STATE_FILE_LIMIT: u64 = 4 * 1024 * 1024;
/// Cgroup paths and container names remembered; forgotten all at once past this.
const CACHE_LIMIT: usize = 1024;

/// The unified (v2) cgroup path of `/proc/PID/cgroup`'s text: the one `0::` line.
///
/// Refused: no such line, or more than one (a name with a newline in it would forge one;
/// kernels since 5.7 refuse such names, this does not rely on it), a path that is not
/// absolute, longer than [`PATH_LIMIT`], or has an empty, `.` or `..` component (the kernel
/// prints `/..` for a cgroup outside the reader's cgroup namespace; joined to the helper's
/// cgroup root it would name another cgroup).
pub fn unified_path(text: &str) -> Result<&str, &'static str> {
    let mut found = None;
    for line in text.split('\n') {
        if let Some(path) = line.strip_prefix("0::") {
            if found.is_some() {
                return Err("more than one unified cgroup line");
            }
            found = Some(path);
        }
    }
    let path = found.ok_or("no unified cgroup (cgroup v2) line")?;
    if !path.starts_with('/') {
        return Err("not an absolute cgroup path");
    }
    if path.len() > PATH_LIMIT {
        return Err("cgroup path too long");
    }
    if path != "/"
        && path[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("cgroup path outside the helper's view");
    }
    Ok(path)
}

/// What a cgroup path's names say (each only as true as the path, see [`claimed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub unit: Option<String>,
    pub user_unit: bool,
    /// The uid of the `user@UID.service` the path is below.
    pub user: Option<u32>,
    pub flatpak: Option<String>,
    pub snap: Option<String>,
    /// Engine and id.
    pub container: Option<(&'static str, String)>,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id of `<prefix><64 hex><suffix>`.
fn id_between<'a>(c: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    c.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .filter(|id| is_id(id))
}

/// Undoes systemd's unit name escaping (`\x2d` for `-`) where it gives a printable ASCII
/// character other than `/`; anything else stays as written.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let decoded = after
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|b| b.is_ascii_graphic() && *b != b'/');
        match decoded {
            Some(b) => {
                out.push(char::from(b));
                rest = &after[2..];
            }
            None => {
                out.push_str("\\x");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The container one path component (with the one before it) names.
fn container_in(prev: Option<&str>, c: &str) -> Option<(&'static str, String)> {
    let scoped = [
        ("docker-", "docker"),
        ("libpod-", "podman"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
    ];
    for (prefix, engine) in scoped {
        if let Some(id) = id_between(c, prefix, ".scope").or_else(|| id_between(c, prefix, "")) {
            return Some((engine, id.to_string()));
        }
    }
    // The cgroupfs drivers: `/docker/<id>`, `/kubepods/…/pod<uid>/<id>`.
    if is_id(c) {
        match prev {
            Some("docker") => return Some(("docker", c.to_string())),
            Some(p) if p.starts_with("pod") => return Some(("containerd", c.to_string())),
            _ => {}
        }
    }
    if let Some(name) = c.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
        return Some(("lxc", name.to_string()));
    }
    if prev == Some("machine.slice") {
        if let Some(name) = c
            .strip_prefix("machine-")
            .and_then(|r| r.strip_suffix(".scope"))
            .filter(|n| !n.is_empty())
        {
            return Some(("nspawn", unescape(name)));
        }
    }
    None
}

/// The Flatpak app id of `app-flatpak-<id>-<n>.scope`.
fn flatpak_in(c: &str) -> Option<String> {
    let (id, n) = c
        .strip_prefix("app-flatpak-")?
        .strip_suffix(".scope")?
        .rsplit_once('-')?;
    (!id.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then(|| unescape(id))
}

/// The Snap name of `snap.<name>.<app>…` (a scope for an app, a service for a daemon).
fn snap_in(c: &str) -> Option<String> {
    let mut parts = c.strip_prefix("snap.")?.split('.');
    let name = parts.next()?;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && parts.next().is_some_and(|app| !app.is_empty())
        && (c.ends_with(".scope") || c.ends_with(".service"));
    ok.then(|| name.to_string())
}

/// What the names in a cgroup path (as [`unified_path`] returns it) say. The unit is the
/// innermost `.service` or `.scope`; the container the outermost one named (the one the
/// host runs; a container inside it is its own business).
pub fn parse(path: &str) -> Names {
    let mut names = Names::default();
    let mut prev: Option<&str> = None;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = c
            .strip_prefix("user@")
            .and_then(|r| r.strip_suffix(".service"))
            .and_then(|u| u.parse::<u32>().ok())
        {
            names.user = Some(uid);
            names.user_unit = false;
            names.unit = Some(c.to_string());
            prev = Some(c);
            continue;
        }
        if c.ends_with(".service") || c.ends_with(".scope") {
            names.user_unit = names.user.is_some();
            names.unit = Some(c.to_string());
        }
        if names.flatpak.is_none() {
            names.flatpak = flatpak_in(c);
        }
        if names.snap.is_none() {
            names.snap = snap_in(c);
        }
        if names.container.is_none() {
            names.container = container_in(prev, c);
        }
        prev = Some(c);
    }
    names
}

/// Who owns a file and its mode bits, as `stat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    pub uid: u32,
    pub mode: u32,
}

/// Whether a process could have put itself there: `perms` are those of the cgroup's
/// `cgroup.procs`, its folder and every folder above it up to the cgroup root (`None` for
/// one that could not be read). Only root's, writable by no group and no other user, all of
/// them, is established; not knowing is a claim.
pub fn claimed(perms: &[Option<Perm>]) -> bool {
    perms.is_empty()
        || perms
            .iter()
            .any(|p| !p.is_some_and(|p| p.uid == 0 && p.mode & 0o022 == 0))
}

/// The `"Name"` of a Docker `config.v2.json`, without its leading `/`.
pub fn docker_name(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Name")]
        name: Option<String>,
    }
    let c: Config = serde_json::from_slice(json).ok()?;
    let name = c.name?;
    let name = name.strip_prefix('/').unwrap_or(&name);
    (!name.is_empty()).then(|| name.to_string())
}

/// The first name of container `id` in a Podman `containers.json`.
pub fn podman_name(json: &[u8], id: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
        #[serde(default)]
        names: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(json).ok()?;
    entries
        .into_iter()
        .find(|e| e.id == id)
        .and_then(|e| e.names.into_iter().next())
        .filter(|n| !n.is_empty())
}

/// What is kept per cgroup path.
#[derive(Debug, Clone)]
struct PathFacts {
    claimed: bool,
    names: Names,
    container: Option<Container>,
}

/// Reads and remembers contexts. The roots are `/proc`, the unified cgroup mount and `/`
/// (for the engines' state files) in the helper; tests point them at folders of their own.
pub struct Contexts {
    proc_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    state_root: PathBuf,
    own_netns: Option<u64>,
    paths: HashMap<String, PathFacts>,
}

impl Default for Contexts {
    fn default() -> Self {
        Contexts::new()
    }
}

/// Where the cgroup2 file system is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid system), from a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split(' ').next()? == "cgroup2")
            .then(|| pre.split(' ').nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// At most `limit` bytes of the regular file at `path`. Opened without waiting and without
/// following a last symbolic link, and read only if it is a regular file: a FIFO a user put
/// where a state file should be would otherwise block the helper's reader for good (an open
/// for reading waits for a writer), and a device could be read for ever.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf).ok()?;
    Some(buf)
}

fn perm(path: &Path) -> Option<Perm> {
    std::fs::symlink_metadata(path).ok().map(|m| Perm {
        uid: m.uid(),
        mode: m.mode(),
    })
}

impl Contexts {
    /// The helper's: `/proc`, the cgroup2 mount of its own mount namespace, `/`.
    pub fn new() -> Contexts {
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        Contexts::with_roots(PathBuf::from("/proc"), mount, PathBuf::from("/"))
    }

    pub fn with_roots(
        proc_root: PathBuf,
        cgroup_root: Option<PathBuf>,
        state_root: PathBuf,
    ) -> Self {
        let own_netns = std::fs::metadata(proc_root.join("self/ns/net"))
            .ok()
            .map(|m| m.ino());
        Contexts {
            proc_root,
            cgroup_root,
            state_root,
            own_netns,
            paths: HashMap::new(),
        }
    }

    /// The context of process `pid`, read now.
    pub fn of(&mut self, pid: i32) -> Context {
        let dir = self.proc_root.join(pid.to_string());
        let netns = std::fs::metadata(dir.join("ns/net")).ok().map(|m| m.ino());
        let mut ctx = Context {
            claimed: true,
            netns,
            netns_own: netns.is_some() && netns == self.own_netns,
            ..Context::default()
        };
        let Some(text) = read_limited(&dir.join("cgroup"), CGROUP_FILE_LIMIT) else {
            return ctx;
        };
        let text = String::from_utf8_lossy(&text);
        let Ok(path) = unified_path(&text) else {
            return ctx;
        };
        let facts = self.path_facts(path);
        ctx.cgroup = Some(path.to_string());
        ctx.claimed = facts.claimed;
        ctx.unit = facts.names.unit;
        ctx.user_unit = facts.names.user_unit;
        ctx.flatpak = facts.names.flatpak;
        ctx.snap = facts.names.snap;
        ctx.container = facts.container;
        ctx
    }

    fn path_facts(&mut self, path: &str) -> PathFacts {
        if let Some(f) = self.paths.get(path) {
            return f.clone();
        }
        let names = parse(path);
        let claimed = match &self.cgroup_root {
            Some(root) => {
                let dir = root.join(path.trim_start_matches('/'));
                let mut perms = vec![perm(&dir.join("cgroup.procs"))];
                perms.extend(
                    dir.ancestors()
                        .take_while(|a| a.starts_with(root))
                        .map(perm),
                );
                claimed(&perms)
            }
            None => true,
        };
        let container = names.container.clone().map(|(engine, id)| {
            let (name, name_claimed) = self.container_name(engine, &id, names.user);
            Container {
                engine: engine.to_string(),
                id,
                name,
                name_claimed,
            }
        });
        let facts = PathFacts {
            claimed,
            names,
            container,
        };
        if self.paths.len() >= CACHE_LIMIT {
            self.paths.clear();
        }
        self.paths.insert(path.to_string(), facts.clone());
        facts
    }

    /// Under the state root.
    fn state(&self, path: &Path) -> PathBuf {
        self.state_root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The container's name from its engine's state files, and whether it is a claim (a file
    /// or folder above it not root's). Only the rootful engines' files, under root's folders,
    /// are read: a rootless engine keeps its state in the home of the user the cgroup is
    /// below, where that user, the watched program included, can put a FIFO, a file on a FUSE
    /// file system of its own (whose server need never answer an open, and the helper would
    /// wait for good), or a link to another user's files. A rootless container is shown by
    /// its engine and id, without a name.
    fn container_name(&self, engine: &str, id: &str, user: Option<u32>) -> (Option<String>, bool) {
        let files: Vec<PathBuf> = match (engine, user) {
            ("docker", None) => {
                vec![PathBuf::from(format!(
                    "/var/lib/docker/containers/{id}/config.v2.json"
                ))]
            }
            ("podman", None) => vec![PathBuf::from(
                "/var/lib/containers/storage/overlay-containers/containers.json",
            )],
            _ => Vec::new(),
        };
        for f in files {
            let f = self.state(&f);
            let Some(json) = read_limited(&f, STATE_FILE_LIMIT) else {
                continue;
            };
            let name = match engine {
                "docker" => docker_name(&json),
                _ => podman_name(&json, id),
            };
            if let Some(name) = name {
                let perms: Vec<Option<Perm>> = std::iter::once(perm(&f))
                    .chain(
                        f.ancestors()
                            .skip(1)
                            .take_while(|a| a.starts_with(&self.state_root))
                            .map(perm),
                    )
                    .collect();
                return (Some(name), claimed(&perms));
            }
        }
        (None, false)
    }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
