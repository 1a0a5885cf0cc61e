use super::*;
use crate::fixtures;

fn seen(machine: &str, exe: Option<&str>, remote: &str, port: u16, ts: &str) -> Seen {
    let mut conn = fixtures::connection(remote, port);
    conn.ts = ts.into();
    conn.process = exe.map(fixtures::process);
    Seen {
        host: machine.into(),
        conn,
        own: false,
    }
}

fn model(events: &[Seen]) -> Model {
    let mut m = Model::default();
    for (i, s) in events.iter().enumerate() {
        m.add(Row::of(
            s,
            Place {
                segment: 0,
                offset: i as u64,
            },
        ));
    }
    m
}

fn t(h: u32) -> String {
    format!("2026-11-25T{h:02}:00:00.000000Z")
}

/// The list as text: programs, and their destinations indented.
fn shown(m: &Model, f: &Filter) -> Vec<String> {
    m.lines(f)
        .iter()
        .map(|l| match *l {
            Line::Program {
                first,
                events,
                destinations,
            } => {
                let g = m.group(first).expect("group");
                format!("{} {events}/{destinations}", g.program())
            }
            Line::Destination(i) => {
                let g = m.group(i).expect("group");
                format!("  {} {}", g.destination(), g.count)
            }
        })
        .collect()
}

fn history() -> Vec<Seen> {
    vec![
        seen("laptop", Some("/usr/bin/curl"), "9.9.9.9", 443, &t(1)),
        seen("laptop", Some("/usr/bin/curl"), "1.1.1.1", 443, &t(2)),
        seen("laptop", Some("/usr/bin/ssh"), "10.0.0.5", 22, &t(3)),
        seen("laptop", Some("/usr/bin/curl"), "9.9.9.9", 443, &t(4)),
        seen("nas", None, "10.0.0.9", 53, &t(5)),
        // Another curl elsewhere is another program.
        seen("laptop", Some("/tmp/curl"), "9.9.9.9", 443, &t(0)),
    ]
}

#[test]
fn events_fold_into_programs_and_destinations_newest_first() {
    let m = model(&history());
    assert_eq!(m.events, 6);
    assert_eq!(
        shown(&m, &Filter::default()),
        [
            "unknown program 1/1",
            "  10.0.0.9:53 1",
            "curl 3/2",
            "  9.9.9.9:443 2",
            "  1.1.1.1:443 1",
            "ssh 1/1",
            "  10.0.0.5:22 1",
            "curl 1/1",
            "  9.9.9.9:443 1",
        ]
    );
    let g = m.group(0).expect("group");
    assert_eq!(
        (g.first.as_str(), g.last.as_str()),
        (t(1).as_str(), t(4).as_str())
    );
    assert_eq!(g.latest.offset, 3, "the details are the latest event's");
    assert_eq!(m.machines.iter().collect::<Vec<_>>(), ["laptop", "nas"]);
}

#[test]
fn filters_narrow_by_each_field() {
    let m = model(&history());
    let count = |f: Filter| {
        m.lines(&f)
            .iter()
            .filter(|l| matches!(l, Line::Destination(_)))
            .count()
    };
    assert_eq!(
        count(Filter {
            text: "CURL 9.9".into(),
            ..Default::default()
        }),
        2
    );
    assert_eq!(
        count(Filter {
            text: "/tmp/".into(),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            port: Some(22),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            machine: Some("nas".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            only_unknown: true,
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            since: Some(t(3)),
            ..Default::default()
        }),
        3
    );
    assert_eq!(
        count(Filter {
            new_since: Some(t(2)),
            ..Default::default()
        }),
        3
    );
    assert_eq!(
        count(Filter {
            proto: Some(Proto::Udp),
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        count(Filter {
            direction: Some(Direction::Inbound),
            ..Default::default()
        }),
        0
    );
    let mut critical = history();
    critical[2].conn.critical = true;
    let m = model(&critical);
    assert_eq!(
        shown(
            &m,
            &Filter {
                only_critical: true,
                ..Default::default()
            }
        ),
        ["ssh 1/1", "  10.0.0.5:22 1"]
    );
}

#[test]
fn names_show_where_they_came_from_and_nothing_hidden() {
    let mut s = seen("laptop", Some("/usr/bin/x"), "93.184.216.34", 443, &t(1));
    s.conn.host = Some("example.com\u{202e}moc".into());
    s.conn.host_source = Some(HostSource::Ptr);
    s.conn.process.as_mut().expect("p").comm = "x".into();
    let m = model(&[s]);
    let g = m.group(0).expect("group");
    assert_eq!(
        g.destination(),
        "93.184.216.34:443 (PTR example.com\\u{202e}moc)"
    );
}

#[test]
fn exports_hold_the_rows_escaped_and_no_formula() {
    let mut h = history();
    h[5].conn.process.as_mut().expect("p").exe = Some("=cmd|' /C calc'!A0\u{1b}".into());
    let m = model(&h);
    let f = Filter::default();
    let groups: Vec<&Group> = m
        .lines(&f)
        .iter()
        .filter_map(|l| match l {
            Line::Destination(i) => m.group(*i),
            _ => None,
        })
        .collect();
    let jsonl = export_jsonl(groups.iter().copied());
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(!jsonl.chars().any(|c| c != '\n' && sanitize::is_hidden(c)));
    assert!(lines
        .iter()
        .any(|l| l["program"] == "=cmd|' /C calc'!A0\u{1b}"));
    assert_eq!(lines[0]["machine"], "nas");
    assert_eq!(lines[1]["count"], 2);
    let csv = export_csv(groups.iter().copied());
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows[0], CSV_HEADER);
    assert_eq!(rows.len(), 6);
    assert!(csv.contains(",'=cmd|' /C calc'!A0\\x1b,"), "{csv}");
    assert!(
        rows[2].starts_with("laptop,/usr/bin/curl,curl,outbound,tcp,9.9.9.9,443,,,2,"),
        "{csv}"
    );
    assert_eq!(csv_cell("a,\"b\""), "\"a,\"\"b\"\"\"");
}

#[test]
fn every_field_is_one_line_new_ones_too() {
    let v = serde_json::json!({
        "on": "laptop",
        "connection": {
            "remote_port": 443,
            "process": { "cmdline": ["curl", "-v\u{1b}[2J"], "exe": "/usr/bin/curl" },
            "ancestors": [{ "pid": 1, "exe": "/sbin/init" }],
            "identity": { "container": "web" },
            "empty": [],
        }
    });
    assert_eq!(
        fields(&v),
        [
            "connection.ancestors[0].exe: /sbin/init",
            "connection.ancestors[0].pid: 1",
            "connection.empty: []",
            "connection.identity.container: web",
            "connection.process.cmdline[0]: curl",
            "connection.process.cmdline[1]: -v\\x1b[2J",
            "connection.process.exe: /usr/bin/curl",
            "connection.remote_port: 443",
            "on: laptop",
        ]
    );
}

#[test]
fn a_key_goes_through_a_line_and_back() {
    let k = GroupKey::of(&history()[0]);
    assert_eq!(GroupKey::from_line(&k.to_line()), Some(k));
    assert_eq!(GroupKey::from_line("nonsense"), None);
}
