//! The helper's command line, without the kernel: flags, config errors, `--show-defaults` and
//! `import-legacy`. These run unprivileged.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

use std::process::{Command, Output};

const HELPER: &str = env!("CARGO_BIN_EXE_conntrack-tray-helper");

fn helper(args: &[&str]) -> Output {
    Command::new(HELPER)
        .args(args)
        .env_remove("PKEXEC_UID")
        .output()
        .expect("run helper")
}

/// The helper run as an ordinary user: as `nobody` when the tests run as root.
fn helper_as_user(args: &[&str]) -> Output {
    let mut c = if nix::unistd::Uid::effective().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", HELPER]);
        c
    } else {
        Command::new(HELPER)
    };
    c.args(args)
        .env_remove("PKEXEC_UID")
        .output()
        .expect("run helper")
}

/// A temporary folder that `nobody` can read.
fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn help_and_version() {
    let o = helper(&["--help"]);
    assert!(o.status.success());
    for flag in [
        "--show-defaults",
        "--show-unknown",
        "--debug",
        "--broadcast",
        "--proto-all",
        "--filter-critical",
        "--log-file",
        "--format",
        "--no-ensure-conntrack",
        "import-legacy",
    ] {
        assert!(stdout(&o).contains(flag), "--help lacks {flag}");
    }
    let o = helper(&["--version"]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("conntrack-tray-helper "));
}

#[test]
fn bad_flags_and_values_exit_2_with_a_clear_error() {
    for args in [
        &["--show-unknown=maybe"][..],
        &["--format", "xml"],
        &["--no-such-flag"],
        &["--proto-all=yes"],
    ] {
        let o = helper(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn show_defaults_prints_the_effective_config_with_flags_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(&dir, "c.toml", "[critical]\nports = [22]\n");
    let o = helper(&[
        "--config",
        &cfg,
        "--show-defaults",
        "--proto-all=true",
        "--show-unknown=false",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let cfg = conntrack_tray_helper::Config::from_toml(&text, "shown").expect("parses");
    assert_eq!(
        cfg.monitor.protocols,
        vec![conntrack_tray_helper::config::ProtoSel::All]
    );
    assert!(!cfg.filter.show_unknown);
    assert_eq!(cfg.critical.ports, vec![22]);
    // What it prints is itself a valid config.
    let again = write(&dir, "again.toml", &text);
    let o2 = helper(&["--config", &again, "--show-defaults"]);
    assert_eq!(stdout(&o2), text);
}

#[test]
fn bad_config_names_file_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        &dir,
        "bad.toml",
        "[filter]\nshow_unknown = true\ncritical_onyl = true\n",
    );
    let o = helper(&["--config", &cfg, "--show-defaults"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(&format!("{cfg}:3:")), "{e}");
    assert!(e.contains("filter.critical_onyl"), "{e}");
    let o = helper(&["--config", "/nonexistent/x.toml", "--show-defaults"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/x.toml"), "{}", stderr(&o));
}

#[test]
fn under_pkexec_a_config_error_quotes_nothing_from_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write(
        &dir,
        "shadow",
        "root:$y$j9T$supersecret:19000:0:99999:7:::\n",
    );
    let o = Command::new(HELPER)
        .args(["--config", &cfg, "--show-defaults"])
        .env("PKEXEC_UID", "1000")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("supersecret"), "{}", stderr(&o));
}

#[test]
fn import_legacy_converts_a_conntrack_sh_config() {
    let dir = shared_tempdir();
    let legacy = write(
        &dir,
        "conntrack_sh.conf",
        "# old\nexport WHITELISTED_PROCESSES=(\"firefox\" 'ssh')\nWHITELISTED_REMOTE_IPS=(\"10.0.0.0/8\")\nCRITICAL_PORTS=(\"22\")\nPROTO_ALL=true\n",
    );
    let o = helper_as_user(&["import-legacy", &legacy]);
    assert!(o.status.success(), "{}", stderr(&o));
    let toml = stdout(&o);
    let out = write(&dir, "new.toml", &toml);
    let shown = helper(&["--config", &out, "--show-defaults"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let cfg = conntrack_tray_helper::Config::from_toml(&stdout(&shown), "shown").expect("parses");
    assert_eq!(cfg.whitelist.processes, vec!["firefox", "ssh"]);
    assert_eq!(cfg.whitelist.remote[0].to_string(), "10.0.0.0/8");
    assert_eq!(cfg.critical.ports, vec![22]);
    assert_eq!(
        cfg.monitor.protocols,
        vec![conntrack_tray_helper::config::ProtoSel::All]
    );

    let bad = write(&dir, "bad.conf", "WHITELISTED_PROCESSES=(\"a\"\n");
    let o = helper_as_user(&["import-legacy", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{bad}:1:")), "{}", stderr(&o));
}

/// The helper as pkexec starts it for whoever calls pkexec.
fn under_pkexec(args: &[&str]) -> Output {
    Command::new(HELPER)
        .args(args)
        .env("PKEXEC_UID", "1000")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run helper")
}

#[test]
fn under_pkexec_only_the_applets_own_flags_are_accepted_and_nothing_is_opened() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("ld.so.preload");
    let log = log.to_str().expect("utf-8 path");
    let cfg = write(&dir, "c.toml", "[filter]\nshow_unknown = true\n");
    for (args, flag) in [
        (&["--format", "json", "--log-file", log][..], "--log-file"),
        (&["--format", "json", "--config", &cfg], "--config"),
        (&["--format", "json", "--broadcast=true"], "--broadcast"),
        (&["--format", "json", "--show-defaults"], "--show-defaults"),
        (&["--format", "text"], "--format text"),
        (&[], "--format text"),
    ] {
        let o = under_pkexec(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
    }
    assert!(
        !std::path::Path::new(log).exists(),
        "the log file was created"
    );
}

#[test]
fn queue_and_rcvbuf_are_capped_everywhere() {
    for args in [
        &["--format", "json", "--queue", "100000000"][..],
        &["--format", "json", "--queue", "0"],
        &["--format", "json", "--rcvbuf", "17179869184"],
    ] {
        for o in [helper(args), under_pkexec(args)] {
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains("is not in"), "{args:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn import_legacy_as_root_is_refused_and_quotes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let shadow = write(
        &dir,
        "shadow",
        "root:$y$j9T$supersecret:19000:0:99999:7:::\n",
    );
    let mut runs = vec![under_pkexec(&["import-legacy", &shadow])];
    if nix::unistd::Uid::effective().is_root() {
        runs.push(helper(&["import-legacy", &shadow]));
    }
    for o in runs {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("needs no privilege"), "{}", stderr(&o));
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!all.contains("supersecret"), "{all}");
    }
}
