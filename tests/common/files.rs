//! Files as the tests look at them: permission bits, and whether another user can read one.

use std::path::Path;
use std::process::Command;

/// A file's permission bits.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether user `nobody` (uid and gid 65534, no groups) can read `path`, by running `cat` as
/// it with setpriv: `Some(true)` read, `Some(false)` refused with "Permission denied", `None`
/// when this cannot be tried (not root, or no setpriv). Any other failure panics.
pub fn nobody_reads(path: &Path) -> Option<bool> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    // setpriv is util-linux's, on every Debian system; require.rs does not list it yet.
    let out = match Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED the read as nobody: setpriv: {e} (install util-linux)");
            return None;
        }
        Err(e) => panic!("setpriv (util-linux) must run under CI=true: {e}"),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.success() {
        true => Some(true),
        false if err.contains("Permission denied") => Some(false),
        false => panic!("setpriv cat {}: {err}", path.display()),
    }
}
