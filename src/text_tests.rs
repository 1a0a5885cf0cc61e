use super::*;
use crate::fixtures;
use conntrack_tray_helper::event::Ancestor;
use conntrack_tray_helper::sanitize::is_hidden;

fn conn(comm: &str, exe: Option<&str>) -> Connection {
    Connection {
        critical: true,
        process: Some(Process {
            comm: comm.into(),
            exe: exe.map(String::from),
            ..fixtures::process("/usr/bin/curl")
        }),
        ..fixtures::connection("93.184.216.34", 443)
    }
}

const ALL: Caps = Caps {
    actions: true,
    markup: true,
};

/// The disguises of the trust issue: a bidi override, a newline, zero-width characters,
/// and a run of spaces before a fake first line.
fn hostile() -> String {
    format!(
        "innocent\u{202e}txt.exe\n\u{200b}\u{200d}\u{2066}{}firefox → github.com (140.82.112.3:443)",
        " ".repeat(200)
    )
}

/// No raw control or format character, but the layout's own line breaks.
fn visible(s: &str) -> bool {
    s.lines().all(|l| !l.chars().any(is_hidden))
}

#[test]
fn a_connection_note_has_the_fields_and_buttons() {
    let n = connection_note(&conn("curl", Some("/usr/bin/curl")), "laptop", &ALL);
    assert_eq!(n.summary, "93.184.216.34:443 ← curl");
    assert_eq!(
        n.body,
        "/usr/bin/curl\npid 4242, user alice\ntcp outbound port 43210, on laptop\ncritical port"
    );
    assert!(n.critical);
    let labels: Vec<&str> = n.actions.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "Details",
            "Whitelist curl",
            "Mute 1 h",
            "Whitelist 93.184.216.34"
        ]
    );
    // Without actions on the server, no buttons.
    assert!(connection_note(&conn("curl", None), "h", &Caps::default())
        .actions
        .is_empty());
}

#[test]
fn the_remote_end_comes_first_and_the_arrow_points_from_who_connected() {
    let mut c = conn("curl", Some("/usr/bin/curl"));
    c.host = Some("api.github.com".into());
    assert_eq!(headline(&c), "93.184.216.34:443 (api.github.com) ← curl");
    c.direction = Direction::Inbound;
    c.host = None;
    assert_eq!(headline(&c), "93.184.216.34:443 → curl");
    c.direction = Direction::Forward;
    c.process = None;
    c.remote_ip = "2001:db8::1".parse().expect("ip");
    assert_eq!(headline(&c), "[2001:db8::1]:443 ↔ unknown program");
}

#[test]
fn a_looked_up_name_gets_its_button_when_it_is_a_valid_pattern() {
    let mut c = conn("curl", Some("/usr/bin/curl"));
    c.host = Some("api.github.com".into());
    c.host_source = Some(HostSource::Dns);
    let n = connection_note(&c, "h", &ALL);
    assert!(n.actions.contains(&(
        ACTION_WL_HOST.to_string(),
        "Whitelist api.github.com".to_string()
    )));
    c.host = Some("bad name!".into());
    assert!(connection_note(&c, "h", &ALL)
        .actions
        .iter()
        .all(|(k, _)| k != ACTION_WL_HOST));
}

#[test]
fn ptr_and_own_resolver_names_are_marked_and_offer_no_whitelist_button() {
    let mut c = conn("curl", Some("/usr/bin/curl"));
    c.host = Some("github.com".into());
    for (source, mark) in [
        (HostSource::Ptr, "(PTR github.com)"),
        (HostSource::OwnResolver, "(its own DNS: github.com)"),
    ] {
        c.host_source = Some(source);
        let n = connection_note(&c, "h", &ALL);
        assert!(n.summary.contains(mark), "{}", n.summary);
        assert!(
            n.actions.iter().all(|(k, _)| k != ACTION_WL_HOST),
            "{source:?}"
        );
    }
    c.host_source = Some(HostSource::Dns);
    assert!(connection_note(&c, "h", &ALL)
        .summary
        .contains("(github.com)"));
}

#[test]
fn no_program_name_hides_or_displaces_the_destination() {
    let mut c = conn(&hostile(), None);
    c.host = Some(format!("evil\u{202e}moc.elgoog{}", "x".repeat(300)));
    let n = connection_note(&c, "laptop\u{200b}", &ALL);
    assert!(visible(&n.summary) && visible(&n.body), "{n:?}");
    assert_eq!(n.summary.lines().count(), 1);
    assert_eq!(n.body.lines().count(), 3, "no forged line: {}", n.body);
    assert!(
        n.summary.starts_with("93.184.216.34:443 (evil\\u{202e}moc"),
        "{}",
        n.summary
    );
    assert!(!n.summary.contains('\n') && !n.summary.contains("  "));
    // The names are escaped visibly and cut, each to its limit.
    let (name, prog) = n.summary.split_once(") ← ").expect("arrow");
    let name = name.split_once(" (").expect("name").1;
    assert_eq!(name.chars().count(), HOST_LIMIT);
    assert!(
        prog.starts_with("innocent\\u{202e}txt.exe\\x0a\\u{200b}"),
        "{prog}"
    );
    assert_eq!(prog.chars().count(), PROGRAM_LIMIT);
    assert!(prog.ends_with('…'));
    assert!(
        n.body.ends_with("on laptop\\u{200b}\ncritical port"),
        "{}",
        n.body
    );
    for (_, label) in &n.actions {
        assert!(visible(label), "{label:?}");
    }
    // The exe's name on the button, as in the summary.
    let c = conn("x", Some(&format!("/tmp/{}", hostile())));
    let n = connection_note(&c, "h", &ALL);
    assert!(n
        .summary
        .starts_with("93.184.216.34:443 ← innocent\\u{202e}"));
    let button = &n.actions[1].1;
    assert!(button.starts_with("Whitelist innocent\\u{202e}") && visible(button));
    assert!(n
        .body
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("/tmp/innocent\\u{202e}")));
}

#[test]
fn each_outside_string_is_sanitized_once_never_twice() {
    // A literal backslash sequence stays as it is: it was not escaped a second time.
    let c = conn("a\\u{202e}b", None);
    assert_eq!(headline(&c), "93.184.216.34:443 ← a\\u{202e}b");
    let c = conn("a\u{202e}b", None);
    assert_eq!(headline(&c), "93.184.216.34:443 ← a\\u{202e}b");
    // Markup characters are left for the notification layer to escape.
    let c = conn("x", Some("/tmp/<b>a&b"));
    assert!(connection_note(&c, "h", &ALL)
        .body
        .starts_with("/tmp/<b>a&b\n"));
}

#[test]
fn the_menu_label_and_the_details_show_the_same_way() {
    let mut c = conn(&hostile(), Some("/tmp/\u{202e}x"));
    c.host = Some("example.com".into());
    c.process.as_mut().expect("process").cmdline =
        vec!["curl".into(), "-H".into(), "X: \u{1b}[2J".into()];
    let s = Seen {
        host: "nas\nfake".into(),
        conn: c,
        own: false,
    };
    assert_eq!(
        recent_label(&s),
        "93.184.216.34:443 (example.com) ← \\u{202e}x, on nas\\x0afake"
    );
    let d = details(&s);
    assert!(visible(&d), "{d}");
    assert_eq!(d.lines().count(), 10, "{d}");
    assert!(d.contains("\nhost: nas\\x0afake\n"), "{d}");
    assert!(d.contains("\nname: example.com\n"), "{d}");
    assert!(d.contains("\nexe: /tmp/\\u{202e}x (verified)\n"), "{d}");
    assert!(d.contains("\ncmdline: curl -H X: \\x1b[2J\n"), "{d}");
    assert!(d.contains("\nprocess: innocent\\u{202e}"), "{d}");
    assert!(
        d.lines().all(|l| l.chars().count() <= 20 + LINE_LIMIT),
        "{d}"
    );
}

#[test]
fn durations_read_as_a_person_says_them() {
    assert_eq!(duration(Duration::from_millis(15_200)), "16 s");
    assert_eq!(duration(Duration::from_secs(60)), "1 min");
    assert_eq!(duration(Duration::from_secs(185)), "3 min 5 s");
    assert_eq!(duration(Duration::from_secs(7440)), "2 h 4 min");
}

#[test]
fn a_group_names_its_first_programs_and_counts_the_rest() {
    let mut a = crate::alerts::Alerts::new(1);
    let t = std::time::Instant::now();
    let mut id = 0;
    for p in ["a", "b", "c", "d", "e\u{202e}"] {
        let s = crate::alerts::Seen {
            host: "h",
            key: p,
            name: p,
            destination: "x:1",
            novelty: Novelty::NewProgram,
            critical: false,
            news: true,
        };
        if let crate::alerts::Decision::Show(i) = a.decide(&s, t) {
            id = i;
        }
    }
    let Some(crate::alerts::Shown::Group(g)) = a.shown(id) else {
        panic!("grouped")
    };
    assert_eq!(group_note(g).summary, "4 new programs: b, c, d, and 1 more");
}

fn ancestor(pid: u32, comm: &str, exe: &str, cmdline: &[&str]) -> Ancestor {
    Ancestor {
        pid,
        comm: comm.into(),
        exe: Some(exe.into()),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        exe_verified: true,
        exited: false,
    }
}

#[test]
fn the_chain_reads_as_who_started_whom() {
    let mut c = conn("curl", Some("/usr/bin/curl"));
    let p = c.process.as_mut().expect("process");
    assert_eq!(lineage(p), None);
    p.ancestors = std::sync::Arc::new(vec![
        ancestor(30, "sh", "/usr/bin/dash", &["sh", "-c", "curl x"]),
        ancestor(
            20,
            "node",
            "/usr/bin/node",
            &["node", "/usr/bin/npm", "install"],
        ),
        ancestor(10, "bash", "/usr/bin/bash", &["bash"]),
    ]);
    assert_eq!(
        lineage(p).as_deref(),
        Some("curl ← dash curl x ← node npm install ← bash")
    );
    let note = connection_note(&c, "laptop", &ALL);
    assert!(
        note.body.contains("node npm install ← bash"),
        "{}",
        note.body
    );
    let d = details(&Seen {
        host: "laptop".into(),
        conn: c,
        own: false,
    });
    assert!(
        d.contains("parent 2: node (pid 20), /usr/bin/node (verified): node /usr/bin/npm install"),
        "{d}"
    );
}

#[test]
fn a_parent_s_hostile_command_line_cannot_break_the_lines() {
    let mut c = conn("curl", Some("/usr/bin/curl"));
    let evil = hostile();
    let p = c.process.as_mut().expect("process");
    let mut parent = ancestor(9, &evil, &format!("/tmp/{evil}"), &[&evil, &evil]);
    parent.exited = true;
    p.ancestors = std::sync::Arc::new(vec![parent]);
    let chain = lineage(p).expect("chain");
    assert!(
        !chain.contains('\n') && !chain.chars().any(is_hidden),
        "{chain:?}"
    );
    let d = details(&Seen {
        host: "laptop".into(),
        conn: c,
        own: false,
    });
    let parent = d
        .lines()
        .find(|l| l.starts_with("parent 1:"))
        .expect("parent line");
    assert!(parent.contains("exited"), "{parent}");
    assert!(!parent.chars().any(is_hidden), "{parent:?}");
    assert_eq!(
        d.lines().filter(|l| l.starts_with("parent")).count(),
        1,
        "{d}"
    );
}

#[test]
fn the_details_say_whether_the_parent_is_known_to_have_forked_it() {
    let forked = |yes: bool| {
        let mut c = conn("curl", Some("/usr/bin/curl"));
        let p = c.process.as_mut().expect("process");
        p.ancestors = std::sync::Arc::new(vec![ancestor(9, "sh", "/usr/bin/dash", &["sh"])]);
        p.parent_forked = yes;
        let d = details(&Seen {
            host: "laptop".into(),
            conn: c,
            own: false,
        });
        d.lines()
            .find_map(|l| l.strip_prefix("forked by parent 1: "))
            .map(str::to_string)
    };
    assert!(forked(true).is_some_and(|l| l.starts_with("yes")));
    assert!(forked(false).is_some_and(|l| l.starts_with("not known")));
}
