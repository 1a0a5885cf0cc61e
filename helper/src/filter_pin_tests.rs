//! `whitelist.pinned`: a whitelisted program is silent only while it runs a pinned binary.

use super::*;
use crate::config::{Pin, ProgramHost};
use crate::direction::{classify, LocalAddrs};

const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn curl(hash: Option<&str>) -> Process {
    Process {
        pid: 42,
        comm: "curl".into(),
        exe: Some("/usr/bin/curl".into()),
        exe_verified: true,
        exe_system: true,
        exe_sha256: hash.map(str::to_string),
        ..Default::default()
    }
}

fn cfg(pins: &[&str]) -> Config {
    let mut cfg = Config::default();
    cfg.whitelist.processes = vec!["/usr/bin/curl".into()];
    cfg.whitelist.pinned = pins
        .iter()
        .map(|h| Pin {
            program: crate::config::AbsolutePath("/usr/bin/curl".into()),
            sha256: h.parse().expect("hash"),
        })
        .collect();
    cfg
}

fn sides() -> crate::direction::Sides {
    let flow = crate::flow::fixtures::flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
    classify(&flow, &LocalAddrs::new(["10.0.0.1".parse().expect("ip")]))
}

#[test]
fn no_pin_keeps_todays_behaviour() {
    let c = cfg(&[]);
    let p = curl(None);
    assert_eq!(
        process_rule(&c, &sides(), Some(&p), true),
        Err(Skip::ProcessWhitelisted)
    );
    assert!(!needs_hash(&c.whitelist, &p));
    assert_eq!(exe_changed(&c.whitelist, &p), None);
}

#[test]
fn a_pinned_program_is_silent_only_with_its_pinned_binary() {
    let c = cfg(&[OLD]);
    let same = curl(Some(OLD));
    assert!(needs_hash(&c.whitelist, &same));
    assert_eq!(
        process_rule(&c, &sides(), Some(&same), true),
        Err(Skip::ProcessWhitelisted)
    );
    assert_eq!(exe_changed(&c.whitelist, &same), None);
    let changed = curl(Some(NEW));
    assert_eq!(process_rule(&c, &sides(), Some(&changed), true), Ok(()));
    assert_eq!(
        exe_changed(&c.whitelist, &changed),
        Some(ExeChanged {
            path: "/usr/bin/curl".into(),
            was: OLD.into(),
            now: Some(NEW.into()),
            since: ChangedSince::Whitelisted,
        })
    );
    // Not hashed (too large, unreadable): nothing pinned is allowed.
    let unknown = curl(None);
    assert_eq!(process_rule(&c, &sides(), Some(&unknown), true), Ok(()));
    assert_eq!(
        exe_changed(&c.whitelist, &unknown).and_then(|e| e.now),
        None
    );
    // Whitelisted again after an update: either binary is allowed, the newest is `was`.
    let c = cfg(&[OLD, NEW]);
    assert_eq!(
        process_rule(&c, &sides(), Some(&changed), true),
        Err(Skip::ProcessWhitelisted)
    );
    let third = curl(Some(&"3".repeat(64)));
    assert_eq!(
        exe_changed(&c.whitelist, &third).map(|e| e.was),
        Some(NEW.to_string())
    );
}

#[test]
fn an_unverified_process_never_borrows_a_pin() {
    let c = cfg(&[OLD]);
    let forged = Process {
        exe_verified: false,
        ..curl(Some(OLD))
    };
    assert_eq!(process_rule(&c, &sides(), Some(&forged), true), Ok(()));
    // Not named by any entry: no change to tell either.
    assert_eq!(exe_changed(&c.whitelist, &forged), None);
}

#[test]
fn program_host_entries_and_the_applets_check_follow_pins_too() {
    let mut c = cfg(&[OLD]);
    c.whitelist.processes.clear();
    c.whitelist.program_hosts = vec![ProgramHost {
        program: "/usr/bin/curl".into(),
        host: "example.com".parse().expect("host"),
    }];
    let host = Some(("example.com", HostSource::Dns));
    assert_eq!(
        host_rule(&c, Some(&curl(Some(OLD))), host),
        Err(Skip::ProgramHostWhitelisted)
    );
    assert_eq!(host_rule(&c, Some(&curl(Some(NEW))), host), Ok(()));
    assert!(exe_changed(&c.whitelist, &curl(Some(NEW))).is_some());
}
