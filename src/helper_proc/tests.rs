use std::process::Command;

use super::*;

#[test]
fn launch_commands() {
    let c = Launch::Pkexec("/usr/libexec/conntrack-tray/conntrack-tray-helper".into()).command();
    assert_eq!(c.get_program(), "pkexec");
    let args: Vec<_> = c.get_args().collect();
    assert_eq!(
        args,
        [
            "/usr/libexec/conntrack-tray/conntrack-tray-helper",
            "--format",
            "json"
        ]
    );
    let nas = Launch::Ssh {
        target: "alice@nas".into(),
        helper: REMOTE_HELPER.into(),
    };
    let c = nas.command();
    let args: Vec<_> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(args.ends_with(&[
        "--".into(),
        "alice@nas".into(),
        "sudo".into(),
        "-n".into(),
        REMOTE_HELPER.into(),
        "--format".into(),
        "json".into()
    ]));
    assert!(args.starts_with(&["-o".into(), "BatchMode=yes".into()]));
    assert_eq!(nas.host(), "nas");
}

#[test]
fn a_dying_helper_is_restarted_with_growing_back_off_and_refusal_is_final() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut l = Link::new(Launch::Direct("/bin/false".into()));
    l.start(0, &tx).expect("start");
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok(Msg::Closed { .. })
    ));
    let t = Instant::now();
    assert_eq!(l.closed(t), Some(1));
    assert!(matches!(l.state, State::Restarting { at, .. } if at == t + Duration::from_secs(1)));
    l.start(0, &tx).expect("start");
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok(Msg::Closed { .. })
    ));
    l.closed(t);
    assert!(matches!(l.state, State::Restarting { at, .. } if at == t + Duration::from_secs(2)));

    // pkexec's 126 (prompt dismissed) before any hello: not retried.
    let mut p = Link::new(Launch::Pkexec("/x".into()));
    p.launch = Launch::Pkexec("/x".into());
    p.child = Some(
        Command::new("sh")
            .args(["-c", "exit 126"])
            .spawn()
            .expect("sh"),
    );
    assert_eq!(p.closed(t), Some(126));
    assert!(matches!(p.state, State::Refused { .. }), "{:?}", p.state);
}

#[test]
fn the_same_host_named_twice_is_one_link() {
    let t = |v: &[&str]| distinct_targets(v.iter().map(|s| s.to_string()));
    assert_eq!(
        t(&[
            "alice@nas",
            "ssh://alice@NAS:22",
            "alice@nas ",
            "bob@nas",
            "nas:2222"
        ]),
        vec!["alice@nas", "bob@nas", "nas:2222"]
    );
}

#[test]
fn helpers_drop_a_replaced_helpers_lines_and_keep_the_books_for_the_current_one() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut h = Helpers::new(
        [Launch::Ssh {
            target: "alice@nas".into(),
            helper: REMOTE_HELPER.into(),
        }],
        tx,
    );
    let hello = |gen, hostname: &str| Msg::Event {
        link: 0,
        gen,
        event: Box::new(Event::Hello {
            version: "0".into(),
            hostname: hostname.into(),
            pid: 1,
            config: Box::default(),
        }),
    };
    let now = Instant::now();
    assert!(
        h.receive(hello(1, "other"), now).is_none(),
        "not its generation"
    );
    assert!(h.receive(hello(0, "nas\x1b.lan"), now).is_some());
    // The label is what the person typed; the host's own name is a detail.
    assert_eq!(h.states(), vec![("nas", &State::Running)]);
    assert_eq!(h.links[0].hostname.as_deref(), Some("nas\x1b.lan"));
    // The status line shows the host's own name beside the label.
    assert_eq!(h.status_states()[0].0, "nas (nas\x1b.lan)");
    let garbage = Msg::Garbage {
        link: 0,
        gen: 0,
        line: "x".into(),
    };
    assert!(matches!(
        h.receive(garbage, now),
        Some(Report::Garbage { host, .. }) if host == "nas"
    ));
    assert!(matches!(
        h.receive(Msg::Closed { link: 0, gen: 0 }, now),
        Some(Report::Closed {
            state: State::Restarting { .. },
            ..
        })
    ));
    assert!(h.receive(Msg::Closed { link: 7, gen: 0 }, now).is_none());
}
