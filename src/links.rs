//! What the applet decides about its helper links: what a helper that says hello is sent,
//! what the person is told about a helper's stray output and its end, and the status line
//! the tray shows for them all.
//!
//! Pure, like `app` (whose [`Effect`]s it returns): `helper_proc` runs the processes and
//! turns their output into [`Report`]s, and these functions decide what follows.

use std::time::Instant;

use conntrack_tray_helper::commands::Command;
use conntrack_tray_helper::Event;

use crate::app::{App, Effect};
use crate::helper_proc::{Report, State};
use crate::settings::UserConfig;
use crate::text;

/// The command that gives a helper the filter part of `config`.
pub fn config_command(config: &UserConfig) -> Command {
    Command::Config {
        config: Box::new(config.helper_config()),
    }
}

/// The command that pauses (true) or resumes a helper.
pub fn pause_command(paused: bool) -> Command {
    if paused {
        Command::Pause
    } else {
        Command::Resume
    }
}

/// What a helper's report does. A helper that says hello (at every start and restart) gets
/// the current settings, and is paused if the person paused monitoring; its events go to
/// [`App::on_event`].
pub fn on_report(app: &mut App, report: Report, now: Instant) -> Vec<Effect> {
    match report {
        Report::Event {
            link,
            host,
            event,
            recovered,
        } => {
            let mut effects = Vec::new();
            if let Some((unwatched, why)) = recovered {
                effects.push(Effect::Tell(format!(
                    "{}: watched again, after {} not watched ({why})",
                    text::host(&host),
                    text::duration(unwatched)
                )));
            }
            if let Event::Hello { .. } = &*event {
                let config = &app.settings.config;
                effects.push(Effect::Send {
                    link,
                    command: config_command(config),
                });
                if config.applet.paused {
                    effects.push(Effect::Send {
                        link,
                        command: Command::Pause,
                    });
                }
            }
            effects.extend(app.on_event(&host, *event, now));
            effects
        }
        Report::Garbage { host, line } => vec![Effect::Tell(format!(
            "{}: unexpected helper output: {}",
            text::host(&host),
            text::line(&line)
        ))],
        Report::Closed {
            link,
            state: State::Restarting { at, why },
            asks_password: true,
            ..
        } => vec![app.restart_notice(link, &why, at.saturating_duration_since(now))],
        Report::Closed {
            host,
            state,
            news: true,
            ..
        } => match state {
            State::Refused { why } if why == "not authorized" => vec![Effect::Tell(
                "monitoring was not authorized; use \"Start monitoring…\" in the menu to try again"
                    .into(),
            )],
            State::Refused { why } => vec![Effect::Tell(format!(
                "{}: not watched: {why}. Choose \"Start monitoring…\" in the menu once it is fixed.",
                text::host(&host)
            ))],
            State::Restarting { at, why } => vec![Effect::Tell(format!(
                "{}: not watched ({why}); trying again in {}",
                text::host(&host),
                text::duration(at.saturating_duration_since(now))
            ))],
            _ => Vec::new(),
        },
        Report::Closed { .. } => Vec::new(),
    }
}

/// The tray's account of the helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status line (the menu's first entry and the tooltip).
    pub text: String,
    /// Some helper is stopped or refused: the menu offers "Start monitoring…".
    pub can_start: bool,
    /// Some helper is running (the icon is not the stopped one).
    pub running: bool,
}

/// The status for the links' hosts and states (in link order): why nothing is monitored, or
/// what is and how much was seen today. The hosts are the helpers' own names (a remote one
/// says its name in its hello), shown sanitized like every outside string.
pub fn status(app: &App, links: &[(&str, &State)], now: Instant) -> Status {
    let running = links.iter().any(|(_, s)| **s == State::Running);
    let can_start = links
        .iter()
        .any(|(_, s)| matches!(s, State::Refused { .. } | State::Stopped));
    let watched: Vec<String> = links
        .iter()
        .filter(|(_, s)| **s == State::Running)
        .map(|(h, _)| text::host(h))
        .collect();
    // Every host not watched, with its state: nothing unwatched goes unsaid.
    let unwatched: Vec<String> = links
        .iter()
        .filter(|(_, s)| **s != State::Running)
        .map(|(h, state)| {
            let host = text::host(h);
            match state {
                State::Restarting { at, why } => format!(
                    "{host}: {why}, reconnecting (next try in {})",
                    text::duration(at.saturating_duration_since(now))
                ),
                State::Refused { why } => format!("{host}: refused ({why})"),
                State::Starting => format!("{host}: connecting"),
                State::Stopped => format!("{host}: stopped"),
                State::Running => String::new(),
            }
        })
        .collect();
    let mut text = if !running {
        format!("Not monitoring — {}", unwatched.join("; "))
    } else if app.settings.config.applet.paused {
        format!("Paused — {}", watched.join(", "))
    } else {
        format!(
            "Monitoring {} — {} today, {} lost",
            watched.join(", "),
            app.events_today(),
            app.lost.total
        )
    };
    if running && !unwatched.is_empty() {
        text.push_str(&format!("; {}", unwatched.join("; ")));
    }
    Status {
        text,
        can_start,
        running,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::history::History;
    use crate::notify::Caps;
    use crate::settings::Settings;

    fn app() -> App {
        let settings = Settings::distrusting("/nonexistent/config.toml".into());
        App::new(
            settings,
            History::open(None),
            crate::novelty::Learned::open(None),
            Caps::default(),
        )
    }

    fn hello(link: usize) -> Report {
        Report::Event {
            link,
            host: "nas".into(),
            event: Box::new(Event::Hello {
                version: "0".into(),
                hostname: "nas".into(),
                pid: 1,
                config: Box::default(),
            }),
            recovered: None,
        }
    }

    #[test]
    fn a_helper_that_says_hello_gets_the_settings_and_the_pause() {
        let mut a = app();
        let now = Instant::now();
        let config = config_command(&a.settings.config);
        assert_eq!(
            on_report(&mut a, hello(1), now),
            vec![Effect::Send {
                link: 1,
                command: config.clone()
            }]
        );
        a.settings.config.applet.paused = true;
        assert_eq!(
            on_report(&mut a, hello(0), now),
            vec![
                Effect::Send {
                    link: 0,
                    command: config
                },
                Effect::Send {
                    link: 0,
                    command: Command::Pause
                }
            ]
        );
    }

    #[test]
    fn stray_output_and_a_refusal_are_told_a_restart_is_not() {
        let mut a = app();
        let now = Instant::now();
        let garbage = Report::Garbage {
            host: "nas".into(),
            line: "oops\u{202e}\n".into(),
        };
        assert_eq!(
            on_report(&mut a, garbage, now),
            vec![Effect::Tell(
                "nas: unexpected helper output: oops\\u{202e}".into()
            )]
        );
        let refused = Report::Closed {
            link: 0,
            host: "laptop".into(),
            state: State::Refused {
                why: "not authorized".into(),
            },
            asks_password: true,
            news: true,
        };
        assert!(matches!(
            &on_report(&mut a, refused, now)[..],
            [Effect::Tell(t)] if t.contains("not authorized")
        ));
        let restarting = |asks_password, news| Report::Closed {
            link: 0,
            host: "nas".into(),
            state: State::Restarting {
                at: now + std::time::Duration::from_secs(15),
                why: "ssh connection lost".into(),
            },
            asks_password,
            news,
        };
        // Over ssh: told once an outage, when it begins.
        assert_eq!(
            on_report(&mut a, restarting(false, true), now),
            vec![Effect::Tell(
                "nas: not watched (ssh connection lost); trying again in 15 s".into()
            )]
        );
        assert!(on_report(&mut a, restarting(false, false), now).is_empty());
        // And once when it ends.
        let mut back = hello(1);
        if let Report::Event { recovered, .. } = &mut back {
            *recovered = Some((
                std::time::Duration::from_secs(16),
                "ssh connection lost".into(),
            ));
        }
        assert!(on_report(&mut a, back, now).contains(&Effect::Tell(
            "nas: watched again, after 16 s not watched (ssh connection lost)".into()
        )));
        // A refusal for good says why and what to do.
        let refused = Report::Closed {
            link: 1,
            host: "nas".into(),
            state: State::Refused {
                why: "sudo wants a password; add the sudoers line".into(),
            },
            asks_password: false,
            news: true,
        };
        assert!(matches!(
            &on_report(&mut a, refused, now)[..],
            [Effect::Tell(t)] if t.starts_with("nas: not watched: sudo wants a password; add the sudoers line. Choose \"Start monitoring…\"")
        ));
        // Through pkexec the person is told before the password prompt, and may decline.
        let fx = on_report(&mut a, restarting(true, true), now);
        let [Effect::Notify { id, note }] = &fx[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(
            note.summary,
            "Monitoring stopped: the helper ssh connection lost"
        );
        assert!(note.body.contains("needs your password"), "{}", note.body);
        assert_eq!(
            a.on_action(*id, crate::app::ACTION_NO_RESTART, now),
            vec![Effect::Hold(0)]
        );
        let fx = on_report(&mut a, restarting(true, false), now);
        let [Effect::Notify { id, .. }] = &fx[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(
            a.on_action(*id, crate::app::ACTION_RESTART, now),
            vec![Effect::RestartNow(0)]
        );
    }

    #[test]
    fn the_status_says_why_nothing_is_monitored_or_what_is() {
        let mut a = app();
        let now = Instant::now();
        let refused = State::Refused {
            why: "not authorized".into(),
        };
        let restarting = State::Restarting {
            at: now + std::time::Duration::from_secs(8),
            why: "ssh connection lost".into(),
        };
        let s = status(&a, &[("laptop", &refused), ("nas", &restarting)], now);
        assert_eq!(
            s.text,
            "Not monitoring — laptop: refused (not authorized); nas: ssh connection lost, reconnecting (next try in 8 s)"
        );
        assert!(s.can_start && !s.running);
        let running = State::Running;
        let s = status(&a, &[("laptop", &running), ("nas", &restarting)], now);
        assert_eq!(
            s.text,
            "Monitoring laptop — 0 today, 0 lost; nas: ssh connection lost, reconnecting (next try in 8 s)"
        );
        assert!(!s.can_start && s.running);
        let s = status(&a, &[("laptop", &running), ("nas", &running)], now);
        assert_eq!(s.text, "Monitoring laptop, nas — 0 today, 0 lost");
        a.settings.config.applet.paused = true;
        assert_eq!(
            status(&a, &[("laptop", &running)], now).text,
            "Paused — laptop"
        );
        // A helper's name is outside text: shown sanitized.
        let s = status(&a, &[("lap\u{202e}top\n   x", &running)], now);
        assert_eq!(s.text, "Paused — lap\\u{202e}top\\x0a x");
    }
}
