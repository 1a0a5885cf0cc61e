use super::*;

fn settings(dir: &tempfile::TempDir, text: Option<&str>) -> Settings {
    let path = dir.path().join("config.toml");
    if let Some(t) = text {
        std::fs::write(&path, t).expect("write");
    }
    Settings::load(path).expect("load")
}

#[test]
fn the_default_document_parses_to_the_defaults() {
    assert_eq!(
        UserConfig::parse(&default_document(), "d").expect("parses"),
        UserConfig::default()
    );
}

#[test]
fn whitelisting_keeps_comments_and_layout() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = "# my settings\n[whitelist]\n# programs I trust\nprocesses = [\"ssh\"] # inline\n\n[filter]\nshow_unknown = false # quiet\n";
    let mut s = settings(&dir, Some(text));
    s.apply(&Edit::WhitelistProcess("/usr/bin/curl".into()))
        .expect("edit");
    let after = std::fs::read_to_string(s.path()).expect("read");
    assert!(
        after.starts_with("# my settings\n[whitelist]\n# programs I trust\n"),
        "{after}"
    );
    assert!(
        after.contains("processes = [\"ssh\", \"/usr/bin/curl\"] # inline"),
        "{after}"
    );
    assert!(after.contains("show_unknown = false # quiet"), "{after}");
    assert_eq!(s.config.whitelist.processes, vec!["ssh", "/usr/bin/curl"]);
    // Twice is once.
    s.apply(&Edit::WhitelistProcess("/usr/bin/curl".into()))
        .expect("edit");
    assert_eq!(s.config.whitelist.processes.len(), 2);
}

#[test]
fn toggles_keep_the_comment_next_to_the_value() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = settings(&dir, Some("[filter]\nshow_unknown = false # quiet\n"));
    s.apply(&Edit::SetShowUnknown(true)).expect("edit");
    s.apply(&Edit::SetAllProtocols(true)).expect("edit");
    s.apply(&Edit::SetPaused(true)).expect("edit");
    let after = std::fs::read_to_string(s.path()).expect("read");
    assert!(after.contains("show_unknown = true # quiet"), "{after}");
    assert!(s.config.filter.show_unknown && s.config.all_protocols() && s.config.applet.paused);
}

#[test]
fn a_missing_file_is_created_from_the_commented_defaults() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = settings(&dir, None);
    assert_eq!(s.config, UserConfig::default());
    s.apply(&Edit::WhitelistRemote("9.9.9.9".into()))
        .expect("edit");
    let after = std::fs::read_to_string(s.path()).expect("read");
    assert!(after.contains("# conntrack-tray configuration."), "{after}");
    assert!(after.contains("remote = [\"9.9.9.9\"]"), "{after}");
}

#[test]
fn an_invalid_file_is_reported_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[filter]\nshow_unknown = true\n").expect("write");
    let mut s = Settings::load(path.clone()).expect("load");
    let broken = "[filter]\nshow_unknown = maybe\n";
    std::fs::write(&path, broken).expect("write");
    let e = s.reload().expect_err("invalid");
    assert!(e.to_string().contains(":2:"), "{e}");
    assert!(e.to_string().contains("filter.show_unknown"), "{e}");
    assert!(s.config.filter.show_unknown, "the last good config stays");
    assert!(s.apply(&Edit::WhitelistProcess("/bin/x".into())).is_err());
    assert!(s.reload_if_changed().is_none(), "said once per change");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), broken);
}

#[test]
fn a_broken_file_at_start_trusts_nothing_and_is_left_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    let broken = "[whitelist]\nprocesses = [\"/usr/bin/curl\"]\nremote = [\"0.0.0.0/0\"]\n[filter]\nshow_unknown = maybe\n";
    std::fs::write(&path, broken).expect("write");
    let e = Settings::load(path.clone()).err().expect("invalid");
    assert!(
        e.to_string().contains(":5:") && e.to_string().contains("filter.show_unknown"),
        "{e}"
    );
    let mut s = Settings::distrusting(path.clone());
    let w = &s.config.whitelist;
    assert!(w.processes.is_empty() && w.remote.is_empty() && w.hosts.is_empty());
    assert!(s.config.notify.enabled && !s.config.applet.paused);
    assert!(s.apply(&Edit::SetPaused(true)).is_err());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), broken);
    assert!(s.reload_if_changed().is_none(), "nothing new to say");
    // Fixed: picked up.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, "[whitelist]\nprocesses = [\"/usr/bin/curl\"]\n").expect("write");
    assert!(matches!(s.reload_if_changed(), Some(Ok(()))));
    assert_eq!(s.config.whitelist.processes, vec!["/usr/bin/curl"]);
}

#[test]
fn a_linked_config_is_edited_through_its_target() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("tmp");
    let dots = dir.path().join("dotfiles");
    std::fs::create_dir(&dots).expect("mkdir");
    std::fs::set_permissions(&dots, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = dots.join("conntrack-tray.toml");
    std::fs::write(&target, "# mine\n[filter]\nshow_unknown = false\n").expect("write");
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink("dotfiles/conntrack-tray.toml", &link).expect("ln");
    let mut s = Settings::load(link.clone()).expect("load");
    s.apply(&Edit::SetShowUnknown(true)).expect("edit");
    assert!(std::fs::symlink_metadata(&link)
        .expect("meta")
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&target).expect("read");
    assert_eq!(text, "# mine\n[filter]\nshow_unknown = true\n");
    assert_eq!(
        std::fs::metadata(&target).expect("meta").mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&dots).expect("meta").mode() & 0o777,
        0o755,
        "not the applet's folder"
    );
    assert!(
        s.reload_if_changed().is_none(),
        "its own write is no outside edit"
    );
}
