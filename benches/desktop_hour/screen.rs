//! What the notification server was shown, read back from the summaries the applet writes
//! (see its `text`), and the hour's rows for the README.

use std::collections::BTreeMap;

use super::common::Notified;
use super::{wall, Program, Role, Run, BROWSER, BROWSER_HOSTS, BROWSER_PORTS, WHITELISTED};

/// Whom a notification is about, from its summary (see the applet's `text`).
#[derive(Debug, Clone, PartialEq)]
pub enum About {
    /// `DESTINATION ← PROGRAM`, perhaps with ` · N connections …` after it.
    Program(String),
    /// `N new programs: A, B, C, and M more` (or `… programs with news: …`).
    Group(Vec<String>),
    /// Anything else: a notice.
    Other,
}

pub fn about(summary: &str) -> About {
    if let Some((_, after)) = summary.split_once(" ← ") {
        let name = after.split(" · ").next().unwrap_or(after);
        return About::Program(name.to_string());
    }
    match summary.split_once(": ") {
        Some((head, list)) if head.contains(" new program") || head.ends_with(" with news") => {
            About::Group(
                list.split(", ")
                    .filter(|n| !n.starts_with("and "))
                    .map(String::from)
                    .collect(),
            )
        }
        _ => About::Other,
    }
}

/// Each notification id of `notes`, what it is about (its names as a group gathered from
/// every call), and its calls: (about, new, in place), in the order the ids first came.
pub fn by_id(notes: &[Notified]) -> Vec<(u32, About, usize, usize)> {
    let mut out: Vec<(u32, About, usize, usize)> = Vec::new();
    for n in notes {
        let new = usize::from(n.replaces == 0);
        let a = about(&n.summary);
        match out.iter_mut().find(|(id, ..)| *id == n.id) {
            Some((_, seen, news, replaced)) => {
                *news += new;
                *replaced += 1 - new;
                if let (About::Group(names), About::Group(more)) = (seen, a) {
                    for m in more {
                        if !names.contains(&m) {
                            names.push(m);
                        }
                    }
                }
            }
            None => out.push((n.id, a, new, 1 - new)),
        }
    }
    out
}

/// The notifications about one program of its own: (new, in place).
pub fn own_counts(ids: &[(u32, About, usize, usize)], name: &str) -> (usize, usize) {
    ids.iter()
        .filter(|(_, a, ..)| *a == About::Program(name.to_string()))
        .fold((0, 0), |(n, r), (_, _, new, repl)| (n + new, r + repl))
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The hour's rows (all but the idle ones).
pub fn report(
    programs: &[Program],
    first: &Run,
    first_notes: &[Notified],
    second_notes: &[Notified],
    in_first: &BTreeMap<String, usize>,
    in_second: &BTreeMap<String, usize>,
) {
    let ids = by_id(first_notes);
    let made = |role: fn(&Role) -> bool| -> usize {
        programs
            .iter()
            .filter(|p| role(&p.role))
            .map(|p| first.connects[&p.name].len())
            .sum()
    };
    let browser = &first.connects[BROWSER];
    let burst = browser.last().unwrap() - browser[0];
    let new_mid = programs
        .iter()
        .filter(|p| {
            matches!(
                p.role,
                Role::New {
                    mid_burst: true,
                    ..
                }
            )
        })
        .count();
    println!("| measure | desktop hour |");
    println!("|---|---|");
    println!(
        "| the hour ({:.0} s) | {} whitelisted programs: {} connections; {BROWSER}: {} connections to {} destinations in {burst:.1} s; {} new programs: one connection each ({new_mid} during the burst) |",
        wall(first.to) - wall(first.from),
        WHITELISTED.len(),
        made(|r| *r == Role::Whitelisted),
        browser.len(),
        BROWSER_HOSTS.len() * BROWSER_PORTS.len(),
        made(|r| matches!(r, Role::New { .. })),
    );
    let got: Vec<String> = in_first.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!(
        "| connections the applet got (its history) | {} |",
        got.join(", ")
    );
    let (n, r) = own_counts(&ids, BROWSER);
    let calls: Vec<&Notified> = first_notes
        .iter()
        .filter(|x| about(&x.summary) == About::Program(BROWSER.into()))
        .collect();
    if let (Some(one), Some(last)) = (calls.first(), calls.last()) {
        let critical = calls.iter().filter(|x| x.urgency == Some(2)).count();
        println!(
            "| notifications: {BROWSER} | {n} new, {r} in place over {:.1} s ({critical} of the {} calls critical urgency); the first {:.1} ms after its first connect() |",
            wall(last.at) - wall(one.at),
            calls.len(),
            (wall(one.at) - browser[0]) * 1000.0
        );
    } else {
        println!("| notifications: {BROWSER} | none |");
    }

    let mut latencies = Vec::new();
    for p in programs {
        let Role::New { port, mid_burst } = p.role else {
            continue;
        };
        let connect = first.connects[&p.name][0];
        let named = first_notes.iter().find(|x| match about(&x.summary) {
            About::Program(n) => n == p.name,
            About::Group(names) => names.contains(&p.name),
            About::Other => false,
        });
        let when = match named {
            Some(x) => {
                let ms = (wall(x.at) - connect) * 1000.0;
                latencies.push(ms);
                let how = match about(&x.summary) {
                    About::Group(_) => " (named in the grouped one)",
                    _ => "",
                };
                format!("; {ms:.1} ms after connect(){how}")
            }
            None => "; never named in a summary".into(),
        };
        let (n, r) = own_counts(&ids, &p.name);
        let at = if mid_burst {
            "mid-burst"
        } else {
            "after the burst"
        };
        println!(
            "| notifications: {} (port {port}, {at}) | {n} new, {r} in place{when} |",
            p.name
        );
    }
    for (_, a, n, r) in &ids {
        match a {
            About::Group(names) => println!(
                "| notifications: grouped ({}) | {n} new, {r} in place |",
                names.join(", ")
            ),
            About::Other => println!("| notifications: other | {n} new, {r} in place |"),
            About::Program(_) => {}
        }
    }
    latencies.sort_by(f64::total_cmp);
    let news = programs
        .iter()
        .filter(|p| matches!(p.role, Role::New { .. }))
        .count();
    println!(
        "| connect() → Notify, new programs (target: all within 1 s, p99 under 100 ms) | median {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}/{news} within 1 s |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.iter().filter(|ms| **ms <= 1000.0).count(),
    );
    let whitelisted: Vec<&str> = WHITELISTED.iter().map(|(n, _)| *n).collect();
    let shown = first_notes
        .iter()
        .chain(second_notes)
        .filter(|x| whitelisted.iter().any(|w| x.summary.contains(w)))
        .count();
    let reached: usize = whitelisted
        .iter()
        .flat_map(|w| [in_first.get(*w), in_second.get(*w)])
        .flatten()
        .sum();
    println!(
        "| notifications for whitelisted programs, both hours (target 0) | {shown} ({reached} of their {} connections reached the applet) |",
        2 * made(|r| *r == Role::Whitelisted)
    );
    println!(
        "| distinct notifications in the hour (target ≤ 15) | {} ({} Notify calls) |",
        ids.len(),
        first_notes.len()
    );
    let critical = second_notes.iter().filter(|x| x.urgency == Some(2)).count();
    let again: usize = in_second.values().sum();
    println!(
        "| the same hour again, all known: critical urgency (target 0) | {critical} of {} Notify calls ({} distinct); the applet got {again} connections |",
        second_notes.len(),
        by_id(second_notes).len()
    );
}
