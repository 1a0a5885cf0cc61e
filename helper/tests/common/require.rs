//! Which programs a test needs, checked before it starts any of them.
//!
//! A test that runs an external program calls [`require`] first, with every program it starts
//! itself and those that a script it runs needs beyond POSIX sh and coreutils. Without one of
//! them the test is skipped with a message naming the program and the Debian package that has
//! it, except under `CI=true`, where the machine must have it and a missing one is a failure.
//! Shared by the helper's test module (`helper/tests/common`) and the applet's
//! (`tests/common`), so a skip reads the same everywhere.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where each program comes from: a Debian package, or how else to install it.
const PACKAGES: &[(&str, &str)] = &[
    // The kernel tests and the benchmark.
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("nft", "nftables"),
    ("ping", "iputils-ping"),
    ("curl", "curl"),
    ("python3", "python3"),
    ("bash", "bash"),
    ("conntrack", "conntrack"),
    // The attacks: a hostile program as `nobody`, in its own namespaces, with more fds than
    // a default limit.
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("prlimit", "util-linux"),
    ("kill", "procps"),
    ("mount", "mount"),
    // The applet's tests.
    ("dbus-daemon", "dbus-daemon"),
    ("Xvfb", "xvfb"),
    ("dunst", "dunst"),
    ("dunstctl", "dunst"),
    ("desktop-file-validate", "desktop-file-utils"),
    ("rsvg-convert", "librsvg2-bin"),
    ("xmllint", "libxml2-utils"),
    ("pkaction", "polkitd"),
    ("make", "make"),
    ("sed", "sed"),
    ("cmp", "diffutils"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
    ("cargo", "cargo"),
    ("cargo-deb", "cargo install cargo-deb"),
    // Watching a host over ssh: a real sshd, the client, sudo on the host, the test user.
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sudo", "sudo"),
    ("visudo", "sudo"),
    ("useradd", "passwd"),
    ("userdel", "passwd"),
];

/// How to get `tool`, as the skip message says it. A tool missing from [`PACKAGES`] is a
/// mistake in the test, so it fails at once rather than when the tool happens to be absent.
fn install_hint(tool: &str) -> String {
    let (_, from) = PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .unwrap_or_else(|| panic!("no package known for {tool:?}: add it to PACKAGES"));
    if from.contains(' ') {
        format!("install it with `{from}`")
    } else {
        format!("install {from}")
    }
}

/// Whether an executable file named `tool` is in one of PATH's directories.
fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| executable(&dir.join(tool)))
}

fn executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when every one of `tools` is on PATH. Otherwise prints `SKIPPED <test>: needs <tool>
/// (install <package>)` and returns false, or under `CI=true` panics naming the tool.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<String> = tools
        .iter()
        .map(|t| (t, install_hint(t)))
        .filter(|(t, _)| !on_path(t))
        .map(|(t, hint)| format!("{t} ({hint})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let needs = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs {needs}, and under CI=true it must run");
    }
    eprintln!("SKIPPED {test}: needs {needs}");
    false
}
