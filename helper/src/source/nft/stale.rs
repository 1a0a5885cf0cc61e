//! Which `conntrack_tray_<pid>` tables were left behind by a helper that is gone.
//!
//! A table added with the `nft` program (kernels before 5.12, which have no owner flag) stays
//! when its helper is killed with SIGKILL or crashes. The next helper removes such a table at
//! start when its pid is dead, is a zombie, or is some other program: a live helper's table is
//! never touched. A table owned by a socket (`NFT_TABLE_F_OWNER`) is always left alone: it
//! belongs to a live socket and goes away with it (and no other socket may delete it).
//!
//! A process is a helper when its executable (`/proc/<pid>/exe`, even one replaced by an
//! upgrade) is named `conntrack-tray-helper` or like this helper's own; when the link cannot be
//! read, its `comm` decides. A helper in another pid namespace that shares our network
//! namespace would be misjudged; helpers are not run that way.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;

use super::wire::TableInfo;

/// Every helper table's name starts with this; the rest is the helper's pid.
pub const PREFIX: &str = "conntrack_tray_";
const HELPER: &str = "conntrack-tray-helper";
/// The kernel keeps 15 bytes of a program's name in `comm`.
const COMM_LEN: usize = 15;

/// The helper's pid from its table's name, for names this code itself makes (no sign, no
/// leading zero, not 0); any other name is not ours.
pub fn pid_of(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What `/proc` says about a pid.
pub trait Procs {
    fn exe(&self, pid: u32) -> io::Result<PathBuf>;
    fn comm(&self, pid: u32) -> io::Result<String>;
}

/// The real `/proc`.
pub struct ProcFs;

impl Procs for ProcFs {
    fn exe(&self, pid: u32) -> io::Result<PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/exe"))
    }
    fn comm(&self, pid: u32) -> io::Result<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end().to_string())
    }
}

/// The names a helper's executable may have: the installed name and this one's own.
fn helper_names(own_exe: Option<&OsStr>) -> Vec<String> {
    let mut names = vec![HELPER.to_string()];
    if let Some(own) = own_exe.and_then(OsStr::to_str) {
        names.push(own.to_string());
    }
    names
}

/// Whether `pid` is a live conntrack-tray-helper (when unsure: yes).
fn is_live_helper(pid: u32, procs: &dyn Procs, names: &[String]) -> bool {
    match procs.exe(pid) {
        Ok(path) => {
            let file = path.file_name().and_then(OsStr::to_str).unwrap_or("");
            let file = file.strip_suffix(" (deleted)").unwrap_or(file);
            names.iter().any(|n| n == file)
        }
        // Gone, a zombie, or a kernel thread: nothing that keeps a table.
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(_) => match procs.comm(pid) {
            Ok(comm) => names.iter().any(|n| {
                let short = n.get(..COMM_LEN).unwrap_or(n);
                comm == short
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        },
    }
}

/// The tables of `tables` to remove: ours by name, not owned, and not a live helper's. One
/// named after `own_pid` is stale too: this helper has not added its own yet.
pub fn stale_tables(
    tables: &[TableInfo],
    own_pid: u32,
    own_exe: Option<&OsStr>,
    procs: &dyn Procs,
) -> Vec<String> {
    let names = helper_names(own_exe);
    tables
        .iter()
        .filter(|t| !t.owned)
        .filter_map(|t| Some((t, pid_of(&t.name)?)))
        .filter(|(_, pid)| *pid == own_pid || !is_live_helper(*pid, procs, &names))
        .map(|(t, _)| t.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A link or file of /proc: its text, or the errno of reading it.
    type Read = Result<&'static str, i32>;

    /// A fake /proc: pid → (exe, comm).
    struct Fake(HashMap<u32, (Read, Read)>);

    impl Procs for Fake {
        fn exe(&self, pid: u32) -> io::Result<PathBuf> {
            match self.0.get(&pid) {
                None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
                Some((Ok(p), _)) => Ok(PathBuf::from(p)),
                Some((Err(e), _)) => Err(io::Error::from_raw_os_error(*e)),
            }
        }
        fn comm(&self, pid: u32) -> io::Result<String> {
            match self.0.get(&pid) {
                None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
                Some((_, Ok(c))) => Ok(c.to_string()),
                Some((_, Err(e))) => Err(io::Error::from_raw_os_error(*e)),
            }
        }
    }

    fn table(name: &str, owned: bool) -> TableInfo {
        TableInfo {
            name: name.into(),
            owned,
        }
    }

    #[test]
    fn only_canonical_pid_names_are_ours() {
        assert_eq!(pid_of("conntrack_tray_4242"), Some(4242));
        for name in [
            "conntrack_tray_",
            "conntrack_tray_0",
            "conntrack_tray_042",
            "conntrack_tray_+42",
            "conntrack_tray_42x",
            "conntrack_tray_99999999999",
            "filter",
            "xconntrack_tray_42",
        ] {
            assert_eq!(pid_of(name), None, "{name}");
        }
    }

    #[test]
    fn dead_zombie_foreign_and_own_pid_tables_are_stale_live_helpers_are_kept() {
        let procs = Fake(HashMap::from([
            (
                10,
                (
                    Ok("/usr/libexec/conntrack-tray/conntrack-tray-helper"),
                    Ok("conntrack-tray-"),
                ),
            ),
            (
                11,
                (
                    Ok("/usr/libexec/conntrack-tray/conntrack-tray-helper (deleted)"),
                    Ok("x"),
                ),
            ),
            (12, (Ok("/home/u/target/debug/my-helper"), Ok("my-helper"))),
            (20, (Ok("/usr/bin/sleep"), Ok("sleep"))),
            // A zombie or a kernel thread: no exe link.
            (21, (Err(libc::ENOENT), Ok("conntrack-tray-"))),
            // Unreadable exe: comm decides.
            (30, (Err(libc::EACCES), Ok("conntrack-tray-"))),
            (31, (Err(libc::EACCES), Ok("bash"))),
            (32, (Err(libc::EACCES), Err(libc::EACCES))),
            (
                40,
                (
                    Ok("/usr/libexec/conntrack-tray/conntrack-tray-helper"),
                    Ok("c"),
                ),
            ),
        ]));
        let tables: Vec<TableInfo> = [10, 11, 12, 20, 21, 22, 30, 31, 32, 40]
            .iter()
            .map(|p| table(&format!("conntrack_tray_{p}"), false))
            .chain([
                table("conntrack_tray_23", true),
                table("filter", false),
                table("conntrack_tray_023", false),
            ])
            .collect();
        let stale = stale_tables(&tables, 40, Some(OsStr::new("my-helper")), &procs);
        assert_eq!(
            stale,
            [
                "conntrack_tray_20",
                "conntrack_tray_21",
                "conntrack_tray_22",
                "conntrack_tray_31",
                "conntrack_tray_40"
            ]
        );
    }
}
