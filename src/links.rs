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
        Report::Event { link, host, event } => {
            let mut effects = Vec::new();
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
            state: State::Refused,
            ..
        } => vec![Effect::Tell(
            "monitoring was not authorized; use \"Start monitoring…\" in the menu to try again"
                .into(),
        )],
        Report::Closed {
            link,
            state: State::Restarting { at, why },
            asks_password: true,
        } => vec![app.restart_notice(link, &why, at.saturating_duration_since(now))],
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
pub fn status(app: &App, links: &[(&str, &State)]) -> Status {
    let running = links.iter().any(|(_, s)| **s == State::Running);
    let can_start = links
        .iter()
        .any(|(_, s)| matches!(s, State::Refused | State::Stopped));
    let hosts: Vec<String> = links.iter().map(|(h, _)| text::host(h)).collect();
    let text = if !running {
        let why = hosts
            .iter()
            .zip(links)
            .map(|(host, (_, state))| match state {
                State::Restarting { why, .. } => format!("{host}: helper {why}, restarting"),
                State::Refused => format!("{host}: not authorized"),
                State::Starting => format!("{host}: starting"),
                State::Stopped => format!("{host}: stopped"),
                State::Running => String::new(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        format!("Not monitoring — {why}")
    } else if app.settings.config.applet.paused {
        format!("Paused — {}", hosts.join(", "))
    } else {
        format!(
            "Monitoring {} — {} today, {} lost",
            hosts.join(", "),
            app.events_today(),
            app.lost.total
        )
    };
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
            state: State::Refused,
            asks_password: true,
        };
        assert!(matches!(
            &on_report(&mut a, refused, now)[..],
            [Effect::Tell(t)] if t.contains("not authorized")
        ));
        let restarting = |asks_password| Report::Closed {
            link: 0,
            state: State::Restarting {
                at: now + std::time::Duration::from_secs(15),
                why: "exited with status 1".into(),
            },
            asks_password,
        };
        assert!(on_report(&mut a, restarting(false), now).is_empty());
        // Through pkexec the person is told before the password prompt, and may decline.
        let fx = on_report(&mut a, restarting(true), now);
        let [Effect::Notify { id, note }] = &fx[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(
            note.summary,
            "Monitoring stopped: the helper exited with status 1"
        );
        assert!(note.body.contains("needs your password"), "{}", note.body);
        assert_eq!(
            a.on_action(*id, crate::app::ACTION_NO_RESTART, now),
            vec![Effect::Hold(0)]
        );
        let fx = on_report(&mut a, restarting(true), now);
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
        let refused = State::Refused;
        let restarting = State::Restarting {
            at: Instant::now(),
            why: "exited with status 1".into(),
        };
        let s = status(&a, &[("laptop", &refused), ("nas", &restarting)]);
        assert_eq!(
            s.text,
            "Not monitoring — laptop: not authorized; nas: helper exited with status 1, restarting"
        );
        assert!(s.can_start && !s.running);
        let running = State::Running;
        let s = status(&a, &[("laptop", &running), ("nas", &restarting)]);
        assert_eq!(s.text, "Monitoring laptop, nas — 0 today, 0 lost");
        assert!(!s.can_start && s.running);
        a.settings.config.applet.paused = true;
        assert_eq!(status(&a, &[("laptop", &running)]).text, "Paused — laptop");
        // A helper's name is outside text: shown sanitized.
        let s = status(&a, &[("lap\u{202e}top\n   x", &running)]);
        assert_eq!(s.text, "Paused — lap\\u{202e}top\\x0a x");
    }
}
