//! Who runs, beyond the pid: the executable's SHA-256 (and a whitelisted program whose binary
//! changed), and the cgroup context (a container's id, established or claimed), with the real
//! helper in network namespaces the tests make and cgroups they make in the cgroup2 tree.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{config_file, root_or_skip, to_port, Helper, Net, PY};
use sha2::{Digest, Sha256};

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn connect_py(ip: &str, port: u16) -> String {
    format!("import socket; s = socket.create_connection(('{ip}', {port}), 2); s.close()")
}

/// Runs `argv` in `ns` (as `user`, when given, through setpriv); fails the test if it fails.
fn run_in(ns: &str, user: Option<u32>, script: &str) {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    if let Some(uid) = user {
        let (u, g) = (format!("--reuid={uid}"), format!("--regid={uid}"));
        c.args(["setpriv", &u, &g, "--clear-groups", "--"]);
    }
    let out = c.args(["sh", "-euc", script]).output().expect("run");
    assert!(
        out.status.success(),
        "script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder under /tmp that `owner` may use (tempdirs are 0700 root).
fn open_dir(owner: u32) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("ctt-ident")
        .tempdir_in("/tmp")
        .expect("tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(d.path(), Some(owner), Some(owner)).expect("chown");
    d
}

/// A copy of python with `tail` appended: a runnable binary of a hash of its own.
fn program(at: &Path, tail: &[u8], owner: u32) {
    let mut bytes = std::fs::read(PY).expect("python");
    bytes.extend_from_slice(tail);
    std::fs::write(at, bytes).expect("write");
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(at, Some(owner), Some(owner)).expect("chown");
}

fn pinned_config(prog: &Path, hash: &str) -> (tempfile::TempDir, PathBuf) {
    let p = prog.display();
    config_file(&format!(
        "[whitelist]\nprocesses = [\"{p}\"]\npinned = [{{ program = \"{p}\", sha256 = \"{hash}\" }}]\n"
    ))
}

#[test]
fn the_hash_is_in_the_event_and_a_replaced_binary_is_reported_as_changed() {
    let test = "the_hash_is_in_the_event_and_a_replaced_binary_is_reported_as_changed";
    let tools = ["ip", "nft", "python3"];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9101, 9102, 9103, 9104]);
    let b = net.b4();
    let d = open_dir(0);
    let prog = d.path().join("tool");
    program(&prog, b"\0one", 0);
    let old = sha256(&prog);
    let (_c, cfg) = pinned_config(&prog, &old);
    // --debug: the silenced flow's decision shows on stderr.
    let args = ["--config", cfg.to_str().expect("path"), "--debug=true"];
    let h = Helper::start(&net.a, &args);
    let p = prog.display();
    // The pinned binary: silent (its hash is waited for, and matches).
    run_in(
        &net.a,
        None,
        &format!("{p} -c \"{}\"", connect_py(&b, 9101)),
    );
    // Decided before the file is replaced: the rename changes the old file's ctime, and a
    // hash still being read then is of no version (a CI run on a loaded machine did that).
    let decided = format!("{b}:9101: ");
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while !seen && std::time::Instant::now() < end {
        if let Ok(l) = h.stderr.recv_timeout(Duration::from_millis(200)) {
            seen = l.contains(&decided);
        }
    }
    assert!(seen, "no decision on the pinned binary's flow within 20 s");
    // Replaced by another file at the same path, its mtime set back to the old one's.
    let new = d.path().join("new");
    program(&new, b"\0two", 0);
    run_in(
        &net.a,
        None,
        &format!(
            "touch -r {p} {n} && mv {n} {p} && {p} -c \"{}\"",
            connect_py(&b, 9102),
            n = new.display()
        ),
    );
    let now = sha256(&prog);
    assert_ne!(now, old);
    // A program nobody whitelisted is hashed too, off the hot path: its second flow has it.
    let py = format!("{PY} -c \"{}\"", connect_py(&b, 9103));
    run_in(&net.a, None, &py);
    std::thread::sleep(Duration::from_millis(800));
    run_in(
        &net.a,
        None,
        &format!("{PY} -c \"{}\"", connect_py(&b, 9104)),
    );
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9101).is_none(),
        "the pinned binary was reported: {lines:?}"
    );
    let changed = to_port(&lines, 9102).expect("the changed binary is reported");
    let proc_ = &changed["process"];
    assert_eq!(proc_["exe_sha256"], now.as_str(), "{changed}");
    let c = &proc_["exe_changed"];
    assert_eq!(c["path"], p.to_string().as_str(), "{changed}");
    assert_eq!(c["was"], old.as_str(), "{changed}");
    assert_eq!(c["now"], now.as_str(), "{changed}");
    assert_eq!(c["since"], "whitelisted", "{changed}");
    let later = to_port(&lines, 9104).expect("python's second flow");
    assert_eq!(
        later["process"]["exe_sha256"],
        sha256(Path::new(PY)).as_str(),
        "{later}"
    );
    assert!(later["process"].get("exe_changed").is_none(), "{later}");
}

#[test]
fn a_changed_or_copied_binary_cannot_borrow_the_pinned_hash() {
    let test = "a_changed_or_copied_binary_cannot_borrow_the_pinned_hash";
    let tools = ["ip", "nft", "setpriv", "python3"];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9201, 9202, 9203, 9204]);
    let b = net.b4();
    // The person whitelisted a program in a folder of their own (the attacker's, too).
    let d = open_dir(65534);
    let prog = d.path().join("tool");
    program(&prog, b"\0AAAA", 65534);
    let pinned = sha256(&prog);
    let (_c, cfg) = pinned_config(&prog, &pinned);
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let (p, dir) = (prog.display(), d.path().display());
    let script = format!(
        r#"
# Whitelisted and unchanged: silent.
{p} -c "{c1}"
# A copy at a path of its own: the same bytes, not the whitelisted file.
cp {p} {dir}/copy && {dir}/copy -c "{c2}"
# The file changed in place: same inode, same size, mtime set back (only ctime tells).
touch -r {p} {dir}/ref
printf B | dd of={p} bs=1 seek=$(( $(stat -c %s {p}) - 1 )) conv=notrunc 2>/dev/null
touch -r {dir}/ref {p}
{p} -c "{c3}"
# Still watched.
{PY} -c "{c4}"
"#,
        c1 = connect_py(&b, 9201),
        c2 = connect_py(&b, 9202),
        c3 = connect_py(&b, 9203),
        c4 = connect_py(&b, 9204),
    );
    run_in(&net.a, Some(65534), &script);
    let lines = h.collect(Duration::from_secs(2));
    assert!(to_port(&lines, 9204).is_some(), "saw nothing: {lines:?}");
    assert!(to_port(&lines, 9201).is_none(), "{lines:?}");
    let copy = to_port(&lines, 9202).expect("the copy is reported");
    assert!(copy["process"].get("exe_changed").is_none(), "{copy}");
    let changed = to_port(&lines, 9203).expect("the changed binary is reported");
    let now = sha256(&prog);
    assert_ne!(now, pinned);
    assert_eq!(changed["process"]["exe_sha256"], now.as_str(), "{changed}");
    assert_eq!(
        changed["process"]["exe_changed"]["was"],
        pinned.as_str(),
        "{changed}"
    );
}

/// A cgroup the test made in the cgroup2 tree; its processes are moved out and it is
/// removed on drop.
struct Cgroup {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    fn mount() -> PathBuf {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        conntrack_tray_helper::attribution::context::cgroup2_mount(&info)
            .expect("a cgroup2 mount (cgroup v2, or the unified tree of a hybrid system)")
    }

    /// `top/a/b...` made below the cgroup2 root.
    fn make(rel: &str) -> Cgroup {
        let root = Cgroup::mount();
        let mut dirs = Vec::new();
        let mut at = root.clone();
        for part in rel.split('/') {
            at = at.join(part);
            if !at.exists() {
                std::fs::create_dir(&at).expect("mkdir cgroup");
                dirs.push(at.clone());
            }
        }
        Cgroup { root, dirs }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_container_cgroup_is_named_and_the_same_name_in_a_users_cgroup_is_a_claim() {
    let test = "a_container_cgroup_is_named_and_the_same_name_in_a_users_cgroup_is_a_claim";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "python3", "mount"]) {
        return;
    }
    let id = format!("{:0>64}", format!("{:x}", std::process::id()));
    let top = format!("conntrack-tray-test-{}", std::process::id());
    let root_owned = format!("{top}/system.slice/docker-{id}.scope");
    let user_owned = format!("{top}/user/docker-{id}.scope");
    let cg = Cgroup::make(&root_owned);
    let _cg2 = Cgroup::make(&user_owned);
    // The user's delegated subtree: its folders and cgroup.procs are the user's.
    for rel in [format!("{top}/user"), user_owned.clone()] {
        let dir = cg.root.join(&rel);
        std::os::unix::fs::chown(&dir, Some(65534), None).expect("chown");
        std::os::unix::fs::chown(dir.join("cgroup.procs"), Some(65534), None).expect("chown");
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9301, 9302]);
    let b = net.b4();
    // `ip netns exec` mounts a sysfs of the namespace's own, without the cgroup file
    // systems: the helper and the programs mount the cgroup2 tree again in theirs.
    let remount = "mount -t cgroup2 cgroup2 /sys/fs/cgroup";
    let wrapper = ["sh", "-c", &format!("{remount} && exec \"$@\""), "sh"];
    let h = Helper::start_wrapped(&net.a, &wrapper, &[]);
    for (rel, port) in [(&root_owned, 9301), (&user_owned, 9302)] {
        run_in(
            &net.a,
            None,
            &format!(
                "{remount} && echo $$ > /sys/fs/cgroup/{rel}/cgroup.procs && exec {PY} -c \"{}\"",
                connect_py(&b, port)
            ),
        );
    }
    let lines = h.collect(Duration::from_secs(2));
    let established = &to_port(&lines, 9301).expect("the container's flow")["process"]["context"];
    assert_eq!(
        established["cgroup"],
        format!("/{root_owned}").as_str(),
        "{established}"
    );
    assert_eq!(established["claimed"], false, "{established}");
    assert_eq!(
        established["container"]["engine"], "docker",
        "{established}"
    );
    assert_eq!(established["container"]["id"], id.as_str(), "{established}");
    assert_eq!(
        established["unit"],
        format!("docker-{id}.scope").as_str(),
        "{established}"
    );
    assert_eq!(established["netns_own"], true, "{established}");
    assert!(established["netns"].as_u64().is_some(), "{established}");
    let claimed = &to_port(&lines, 9302).expect("the user cgroup's flow")["process"]["context"];
    assert_eq!(claimed["claimed"], true, "{claimed}");
    assert_eq!(claimed["container"]["id"], id.as_str(), "{claimed}");
}
