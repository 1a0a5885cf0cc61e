use super::*;

const ID: &str = "3f2b5c0e9d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";

#[test]
fn the_unified_line_is_the_one_path() {
    assert_eq!(
        unified_path("0::/system.slice/ssh.service\n"),
        Ok("/system.slice/ssh.service")
    );
    // Hybrid: v1 lines are ignored.
    let hybrid =
        "12:pids:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n";
    assert_eq!(unified_path(hybrid), Ok("/user.slice/x.scope"));
    assert_eq!(unified_path("0::/\n"), Ok("/"));
    assert!(unified_path("3:memory:/a\n").is_err());
    assert!(unified_path("").is_err());
}

#[test]
fn a_forged_second_line_outside_paths_and_huge_lines_are_refused() {
    // A name with a newline in it would print a second `0::` line of its choosing.
    let forged = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/x\n0::/system.slice/docker-{ID}.scope\n"
    );
    assert!(unified_path(&forged).is_err());
    assert!(unified_path("0::/../../system.slice/docker.service\n").is_err());
    assert!(unified_path("0::/a/./b\n").is_err());
    assert!(unified_path("0::/a//b\n").is_err());
    assert!(unified_path("0::relative\n").is_err());
    let huge = format!("0::/{}\n", "a".repeat(PATH_LIMIT + 1));
    assert!(unified_path(&huge).is_err());
    // Control characters are kept (the output escapes them), they do not break the parse.
    let odd =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/\u{1b}[31m\u{202e}.scope\n";
    assert!(unified_path(odd).is_ok());
    assert_eq!(
        parse(unified_path(odd).expect("path")).unit.as_deref(),
        Some("\u{1b}[31m\u{202e}.scope")
    );
}

#[test]
fn system_and_user_units_are_told_apart() {
    let n = parse("/system.slice/nginx.service");
    assert_eq!(
        (n.unit.as_deref(), n.user_unit, n.user),
        (Some("nginx.service"), false, None)
    );
    let n = parse("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service");
    assert_eq!(
        (n.unit.as_deref(), n.user_unit, n.user),
        (Some("foo.service"), true, Some(1000))
    );
    // The user manager itself is a system unit.
    let n = parse("/user.slice/user-1000.slice/user@1000.service");
    assert_eq!(
        (n.unit.as_deref(), n.user_unit),
        (Some("user@1000.service"), false)
    );
    let n = parse("/user.slice/user-1000.slice/session-2.scope");
    assert_eq!(
        (n.unit.as_deref(), n.user_unit),
        (Some("session-2.scope"), false)
    );
    assert_eq!(parse("/"), Names::default());
}

#[test]
fn flatpak_and_snap_names() {
    let n = parse("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-org.mozilla.firefox-12345.scope");
    assert_eq!(n.flatpak.as_deref(), Some("org.mozilla.firefox"));
    assert!(n.user_unit);
    let n = parse("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-com.example.My\\x2dApp-7.scope");
    assert_eq!(n.flatpak.as_deref(), Some("com.example.My-App"));
    assert_eq!(parse("/x/app-flatpak--7.scope").flatpak, None);
    assert_eq!(parse("/x/app-flatpak-org.x-y.scope").flatpak, None);
    let n = parse("/user.slice/user-1000.slice/user@1000.service/app.slice/snap.firefox.firefox-0b4f6e1c-1b2c-4d3e-9f00-1234567890ab.scope");
    assert_eq!(n.snap.as_deref(), Some("firefox"));
    assert_eq!(
        parse("/system.slice/snap.lxd.daemon.service")
            .snap
            .as_deref(),
        Some("lxd")
    );
    assert_eq!(parse("/system.slice/snap.mount").snap, None);
    assert_eq!(parse("/system.slice/snapd.service").snap, None);
}

#[test]
fn containers_of_each_engine_and_driver() {
    let c = |p: &str| parse(p).container;
    let some = |e: &'static str, id: &str| Some((e, id.to_string()));
    assert_eq!(
        c(&format!("/system.slice/docker-{ID}.scope")),
        some("docker", ID)
    );
    assert_eq!(c(&format!("/docker/{ID}")), some("docker", ID));
    assert_eq!(
        c(&format!("/machine.slice/libpod-{ID}.scope/container")),
        some("podman", ID)
    );
    assert_eq!(
        c(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
        )),
        some("podman", ID)
    );
    // conmon watches a container; it is not in it.
    assert_eq!(c(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
    assert_eq!(
        c(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{ID}.scope")),
        some("containerd", ID)
    );
    assert_eq!(
        c(&format!("/kubepods/besteffort/pod1234-5678/{ID}")),
        some("containerd", ID)
    );
    assert_eq!(
        c(&format!("/system.slice/crio-{ID}.scope")),
        some("crio", ID)
    );
    assert_eq!(c("/lxc.payload.web"), some("lxc", "web"));
    assert_eq!(
        c("/machine.slice/machine-deb\\x2dtest.scope"),
        some("nspawn", "deb-test")
    );
    // Not 64 lowercase hex digits: not an id.
    assert_eq!(c("/system.slice/docker-abc.scope"), None);
    assert_eq!(
        c(&format!("/system.slice/docker-{}.scope", ID.to_uppercase())),
        None
    );
    assert_eq!(c("/system.slice/docker.service"), None);
    // The outermost container is the host's.
    let nested = format!("/system.slice/docker-{ID}.scope/docker/{}", "1".repeat(64));
    assert_eq!(c(&nested), some("docker", ID));
}

#[test]
fn only_root_only_cgroups_are_established() {
    let root = |mode| Some(Perm { uid: 0, mode });
    assert!(!claimed(&[root(0o100644), root(0o40755), root(0o40755)]));
    // The user's delegated subtree.
    assert!(claimed(&[
        Some(Perm {
            uid: 1000,
            mode: 0o100644
        }),
        root(0o40755)
    ]));
    // Group- or other-writable anywhere up the path: someone could have renamed or moved.
    assert!(claimed(&[root(0o100664), root(0o40755)]));
    assert!(claimed(&[root(0o100644), root(0o40757)]));
    // Not knowing is a claim.
    assert!(claimed(&[root(0o100644), None]));
    assert!(claimed(&[]));
}

#[test]
fn unescaping_keeps_what_it_cannot_decode() {
    assert_eq!(unescape("a\\x2db"), "a-b");
    assert_eq!(unescape("a\\x2fb"), "a\\x2fb", "never a slash");
    assert_eq!(unescape("a\\x0ab"), "a\\x0ab", "never a control character");
    assert_eq!(unescape("a\\xzz\\x"), "a\\xzz\\x");
    assert_eq!(unescape("\\x2d\\x2d"), "--");
}

#[test]
fn state_files_give_names() {
    assert_eq!(
        docker_name(br#"{"ID":"x","Name":"/web","Config":{}}"#).as_deref(),
        Some("web")
    );
    assert_eq!(docker_name(b"{}"), None);
    assert_eq!(docker_name(b"not json"), None);
    let podman = format!(
        r#"[{{"id":"{}","names":["other"]}},{{"id":"{ID}","names":["db","x"]}}]"#,
        "0".repeat(64)
    );
    assert_eq!(podman_name(podman.as_bytes(), ID).as_deref(), Some("db"));
    assert_eq!(podman_name(b"[]", ID), None);
}

#[test]
fn the_cgroup2_mount_is_found_on_unified_and_hybrid_systems() {
    let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup2_mount(unified),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    let hybrid = "31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n40 25 0:35 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup2_mount(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    assert_eq!(cgroup2_mount("garbage\n"), None);
}

/// A fake /proc and cgroup root: process 7 in `cgroup`, with the cgroup tree made of
/// folders owned as the test says.
fn world(cgroup: &str) -> (tempfile::TempDir, Contexts) {
    let tmp = tempfile::tempdir().expect("tmp");
    let proc_dir = tmp.path().join("proc/7");
    std::fs::create_dir_all(&proc_dir).expect("mkdir");
    std::fs::write(proc_dir.join("cgroup"), format!("0::{cgroup}\n")).expect("write");
    let cg = tmp.path().join("cgroup");
    let dir = cg.join(cgroup.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("cgroup.procs"), "7\n").expect("write");
    let ctx = Contexts::with_roots(tmp.path().join("proc"), Some(cg), tmp.path().join("state"));
    (tmp, ctx)
}

#[test]
fn a_context_is_read_through_the_roots_with_the_container_name() {
    let cgroup = format!("/system.slice/docker-{ID}.scope");
    let (tmp, mut ctxs) = world(&cgroup);
    let state = tmp
        .path()
        .join(format!("state/var/lib/docker/containers/{ID}"));
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("config.v2.json"), br#"{"Name":"/web"}"#).expect("write");
    let c = ctxs.of(7);
    assert_eq!(c.cgroup.as_deref(), Some(cgroup.as_str()));
    assert_eq!(c.unit, Some(format!("docker-{ID}.scope")));
    let container = c.container.expect("container");
    assert_eq!(
        (container.engine.as_str(), container.id.as_str()),
        ("docker", ID)
    );
    assert_eq!(container.name.as_deref(), Some("web"));
    // Files of whoever runs the test: established only when that is root.
    let root = nix::unistd::Uid::effective().is_root();
    assert_eq!(c.claimed, !root);
    assert_eq!(container.name_claimed, !root);
    // No such process: nothing but a claim.
    let none = ctxs.of(8);
    assert!(none.claimed && none.cgroup.is_none());
}

#[test]
fn a_cgroup_owned_by_a_user_is_a_claim() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Files of a non-root test are claims anyway (checked above).
    }
    let cgroup = format!("/system.slice/docker-{ID}.scope");
    let (tmp, mut ctxs) = world(&cgroup);
    let procs = tmp
        .path()
        .join("cgroup/system.slice")
        .join(format!("docker-{ID}.scope/cgroup.procs"));
    std::os::unix::fs::chown(&procs, Some(65534), None).expect("chown");
    assert!(ctxs.of(7).claimed);
    // Writable by the group one folder up: claimed too.
    let (tmp, mut ctxs) = world(&cgroup);
    let slice = tmp.path().join("cgroup/system.slice");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slice, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    assert!(ctxs.of(7).claimed);
    let (_tmp, mut ctxs) = world(&cgroup);
    assert!(!ctxs.of(7).claimed);
}

/// A rootless container's state is in its user's home, where the watched program can put a
/// FIFO (an open for reading would wait for a writer for good) or a FUSE file: it is not
/// read, even where it is there to read. The container is still named by engine and id.
/// (User 0, so the home is `/root` on any machine the test runs on.)
#[test]
fn a_rootless_containers_state_in_the_home_is_not_read() {
    let cgroup = format!("/user.slice/user-0.slice/user@0.service/app.slice/docker-{ID}.scope");
    let (tmp, mut ctxs) = world(&cgroup);
    let state = tmp
        .path()
        .join(format!("state/root/.local/share/docker/containers/{ID}"));
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("config.v2.json"), br#"{"Name":"/web"}"#).expect("write");
    let c = ctxs.of(7);
    let container = c.container.expect("container");
    assert_eq!(container.id, ID);
    assert_eq!(container.name, None);
}

/// Where a state file should be, a FIFO is not opened to wait for a writer, nor read.
#[test]
fn a_fifo_in_place_of_a_state_file_is_passed_over_at_once() {
    let cgroup = format!("/system.slice/docker-{ID}.scope");
    let (tmp, mut ctxs) = world(&cgroup);
    let state = tmp
        .path()
        .join(format!("state/var/lib/docker/containers/{ID}"));
    std::fs::create_dir_all(&state).expect("mkdir");
    nix::unistd::mkfifo(&state.join("config.v2.json"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ctxs.of(7).container.map(|c| c.name));
    });
    // Bounded: a blocked open would never answer.
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the description does not wait on the FIFO");
    assert_eq!(got, Some(None));
}
