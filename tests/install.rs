//! Desktop integration and installation: the desktop files and the polkit policy validate,
//! `make install` into a DESTDIR writes exactly the documented files and `make uninstall`
//! takes them all away, and the .deb holds the same files. Under CI (root, a throwaway
//! machine) the .deb is also installed for real, checked with pkaction, and purged.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::path::{Path, PathBuf};

use common::{require, Killed};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(format!(
                    "/{}",
                    p.strip_prefix(base).expect("under").display()
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Starts a system bus and polkitd unless a system bus already runs.
fn system_bus_with_polkit() -> Vec<Killed> {
    let socket = Path::new("/run/dbus/system_bus_socket");
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_ok() {
        return Vec::new();
    }
    let _ = std::fs::remove_file(socket);
    std::fs::create_dir_all("/run/dbus").expect("/run/dbus");
    let bus = Command::new("dbus-daemon")
        .args(["--system", "--nofork", "--nopidfile"])
        .spawn()
        .expect("system dbus-daemon");
    let guard = vec![Killed(bus)];
    for _ in 0..100 {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let polkitd = Command::new("/usr/lib/polkit-1/polkitd")
        .arg("--no-debug")
        .spawn()
        .expect("polkitd");
    let mut guard = guard;
    guard.push(Killed(polkitd));
    std::thread::sleep(std::time::Duration::from_millis(500));
    guard
}

#[test]
fn desktop_files_validate_without_errors_warnings_or_hints() {
    let test = "desktop_files_validate_without_errors_warnings_or_hints";
    if !require(test, &["desktop-file-validate"]) {
        return;
    }
    for f in [
        "desktop/conntrack-tray.desktop",
        "desktop/conntrack-tray-autostart.desktop",
    ] {
        let out = run(Command::new("desktop-file-validate").arg(root().join(f)));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim().is_empty(), "{f}: {text}");
        // GNOME lists the applet under its notification settings only with this key.
        let entry = std::fs::read_to_string(root().join(f)).expect("desktop file");
        assert!(
            entry.lines().any(|l| l == "X-GNOME-UsesNotifications=true"),
            "{f}"
        );
    }
}

#[test]
fn the_polkit_policy_is_valid_and_asks_an_admin_once() {
    let test = "the_polkit_policy_is_valid_and_asks_an_admin_once";
    let policy = std::fs::read_to_string(root().join("polkit/io.github.conntrack-tray.policy"))
        .expect("policy");
    for needle in [
        "<allow_active>auth_admin_keep</allow_active>",
        "<allow_inactive>no</allow_inactive>",
        "<allow_any>no</allow_any>",
        r#"<annotate key="org.freedesktop.policykit.exec.path">/usr/local/libexec/conntrack-tray/conntrack-tray-helper</annotate>"#,
    ] {
        assert!(policy.contains(needle), "{needle}");
    }
    let dtd = Path::new("/usr/share/polkit-1/policyconfig-1.dtd");
    // The checks above need no program; validating against polkit's DTD needs xmllint.
    if !require(test, &["xmllint"]) {
        return;
    }
    if !dtd.exists() {
        assert!(!ci(), "CI must install polkitd (for its DTD)");
        eprintln!("SKIPPED: no polkit DTD");
        return;
    }
    run(Command::new("xmllint")
        .arg("--noout")
        .arg("--dtdvalid")
        .arg(dtd)
        .arg(root().join("polkit/io.github.conntrack-tray.policy")));
}

#[test]
fn make_install_writes_exactly_the_listed_files_and_uninstall_removes_them() {
    let test = "make_install_writes_exactly_the_listed_files_and_uninstall_removes_them";
    // The Makefile's recipes run sed and cmp besides coreutils.
    if !require(test, &["make", "sed", "cmp"]) {
        return;
    }
    let target = PathBuf::from(env!("CARGO_BIN_EXE_conntrack-tray"))
        .parent()
        .expect("dir")
        .to_path_buf();
    if !target.join("conntrack-tray-helper").exists() {
        assert!(!ci(), "the helper is not built next to the applet");
        eprintln!("SKIPPED: the helper is not built (cargo test --workspace builds it)");
        return;
    }
    let dest = tempfile::tempdir().expect("tmp");
    let make = |args: &[&str]| {
        run(Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(root())
            .arg(format!("DESTDIR={}", dest.path().display()))
            .arg(format!("TARGET={}", target.display()))
            .args(args))
    };
    let expected: Vec<String> = {
        let out = make(&["files"]);
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    // 18 files, and the four tray state icons at six PNG sizes.
    assert_eq!(expected.len(), 18 + 24, "{expected:?}");
    make(&["install"]);
    assert_eq!(files_under(dest.path()), expected);
    // The helper is off users' PATH, the policy names it, the config is the documented default.
    let helper = "/usr/local/libexec/conntrack-tray/conntrack-tray-helper";
    assert!(expected.contains(&helper.to_string()));
    let policy = std::fs::read_to_string(
        dest.path()
            .join("usr/share/polkit-1/actions/io.github.conntrack-tray.policy"),
    )
    .expect("policy");
    assert!(policy.contains(&format!(">{helper}<")));
    let cfg = dest.path().join("etc/conntrack-tray/config.toml");
    assert_eq!(
        std::fs::read(&cfg).expect("cfg"),
        std::fs::read(root().join("conf/conntrack-tray.toml")).expect("conf")
    );

    // A changed config is never overwritten: the new default goes beside it.
    std::fs::write(&cfg, "# mine\n").expect("edit");
    make(&["install"]);
    assert_eq!(std::fs::read_to_string(&cfg).expect("cfg"), "# mine\n");
    assert!(cfg.with_extension("toml.new").exists());

    // Uninstall takes everything it put there and leaves the person's config.
    make(&["uninstall"]);
    assert_eq!(
        files_under(dest.path()),
        vec!["/etc/conntrack-tray/config.toml".to_string()]
    );
    std::fs::remove_file(&cfg).expect("rm");

    // With another prefix the policy follows the helper.
    make(&["install", "PREFIX=/opt/ct"]);
    let policy = std::fs::read_to_string(
        dest.path()
            .join("usr/share/polkit-1/actions/io.github.conntrack-tray.policy"),
    )
    .expect("policy");
    assert!(policy.contains(">/opt/ct/libexec/conntrack-tray/conntrack-tray-helper<"));
    make(&["install-systemd", "PREFIX=/opt/ct"]);
    let unit = std::fs::read_to_string(
        dest.path()
            .join("opt/ct/lib/systemd/system/conntrack-tray-helper.service"),
    )
    .expect("unit");
    assert!(unit.contains(
        "ExecStart=/opt/ct/libexec/conntrack-tray/conntrack-tray-helper --format text --log-file"
    ));
    make(&["uninstall", "PREFIX=/opt/ct"]);
    assert!(
        files_under(dest.path()).is_empty(),
        "{:?}",
        files_under(dest.path())
    );
}

#[test]
fn the_deb_holds_the_same_files_and_installs_and_purges_cleanly() {
    let test = "the_deb_holds_the_same_files_and_installs_and_purges_cleanly";
    // scripts/deb.sh runs sed and `cargo deb`.
    if !require(test, &["cargo", "cargo-deb", "sed", "dpkg-deb"]) {
        return;
    }
    let target = PathBuf::from(env!("CARGO_BIN_EXE_conntrack-tray"))
        .parent()
        .expect("dir")
        .to_path_buf();
    if !target.join("conntrack-tray-helper").exists() {
        assert!(!ci(), "the helper is not built next to the applet");
        return;
    }
    let outdir = tempfile::tempdir().expect("tmp");
    let deb = outdir.path().join("conntrack-tray.deb");
    // The debug build the tests already made: no second build.
    run(Command::new(root().join("scripts/deb.sh"))
        .env("PROFILE", "dev")
        .arg("-o")
        .arg(&deb));
    let list = String::from_utf8_lossy(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout)
        .into_owned();
    let mut files: Vec<String> = list
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    files.sort();
    let mut expected = vec![
        "/etc/conntrack-tray/config.toml",
        "/usr/bin/conntrack-tray",
        "/usr/lib/systemd/system/conntrack-tray-helper.service",
        "/usr/libexec/conntrack-tray/conntrack-tray-helper",
        "/usr/share/applications/conntrack-tray.desktop",
        "/usr/share/doc/conntrack-tray/README.md",
        "/usr/share/doc/conntrack-tray/copyright",
        "/usr/share/icons/hicolor/scalable/apps/conntrack-tray.svg",
        "/usr/share/polkit-1/actions/io.github.conntrack-tray.policy",
    ];
    let pngs: Vec<String> = [16, 22, 24, 32, 48, 64, 128, 256]
        .iter()
        .map(|s| format!("/usr/share/icons/hicolor/{s}x{s}/apps/conntrack-tray.png"))
        .collect();
    let states: Vec<String> = ["alert", "error", "monitoring", "paused"]
        .iter()
        .map(|s| format!("/usr/share/icons/hicolor/scalable/status/conntrack-tray-{s}.svg"))
        .collect();
    let state_pngs: Vec<String> = [16, 22, 24, 32, 48, 64]
        .iter()
        .flat_map(|z| {
            ["alert", "error", "monitoring", "paused"]
                .map(|s| format!("/usr/share/icons/hicolor/{z}x{z}/status/conntrack-tray-{s}.png"))
        })
        .collect();
    expected.extend(pngs.iter().map(String::as_str));
    expected.extend(states.iter().map(String::as_str));
    expected.extend(state_pngs.iter().map(String::as_str));
    expected.sort();
    assert_eq!(files, expected);
    let info = String::from_utf8_lossy(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)).stdout)
        .into_owned();
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or("");
    for d in ["pkexec", "dbus", "nftables"] {
        assert!(depends.contains(d), "{depends}");
    }

    // Installing for real changes the machine: only on CI's throwaway one.
    if !ci() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED the real install: only under CI=true as root");
        return;
    }
    // dbus-daemon only when no system bus runs yet (see system_bus_with_polkit).
    if !require(test, &["apt-get", "pkaction", "dbus-daemon"]) {
        return;
    }
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(["-y", "-qq", "-o", "Dpkg::Use-Pty=0"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&[
        "install",
        "--no-install-recommends",
        deb.to_str().expect("path"),
    ]);
    // pkaction asks polkitd over the system bus; a bare CI machine runs neither, so start
    // both for this check (and stop them after, by pid).
    let _services = system_bus_with_polkit();
    let action = String::from_utf8_lossy(
        &run(Command::new("pkaction").args([
            "--action-id",
            "io.github.conntrack-tray.helper",
            "--verbose",
        ]))
        .stdout,
    )
    .into_owned();
    assert!(action.contains("org.freedesktop.policykit.exec.path -> /usr/libexec/conntrack-tray/conntrack-tray-helper"), "{action}");
    assert!(
        action.contains("implicit active:   auth_admin_keep"),
        "{action}"
    );
    let v = run(Command::new("/usr/bin/conntrack-tray").arg("--version"));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("conntrack-tray "));
    let v = run(Command::new("/usr/libexec/conntrack-tray/conntrack-tray-helper").arg("--version"));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("conntrack-tray-helper "));
    apt(&["purge", "conntrack-tray"]);
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} is left after purge");
    }
}
