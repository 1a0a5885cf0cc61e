//! conntrack-tray: the unprivileged tray applet. Wiring only: the CLI, one event loop over
//! helper lines, menu clicks, notification buttons, a one-second tick and signals; the
//! decisions are in `app`.

mod app;
mod desktop;
#[cfg(test)]
mod fixtures;
mod helper_proc;
mod history;
mod notify;
mod settings;
mod tray;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use conntrack_tray_helper::commands;
use crossbeam_channel::{select, tick, unbounded};

use app::{App, Effect};
use helper_proc::{Launch, Link, Msg, State};
use settings::Settings;

/// The D-Bus name that makes the applet one per session.
const BUS_NAME: &str = "io.github.conntrack_tray.Applet";
/// Where `make install` puts the helper, first match wins.
const HELPER_PATHS: [&str; 2] = [
    "/usr/local/libexec/conntrack-tray/conntrack-tray-helper",
    "/usr/libexec/conntrack-tray/conntrack-tray-helper",
];

/// Tray applet that tells you which program opened which network connection.
#[derive(Parser, Debug)]
#[command(name = "conntrack-tray", version, about)]
struct Cli {
    /// The helper to run [default: the installed one, else the one next to this binary].
    #[arg(long, value_name = "PATH")]
    helper: Option<PathBuf>,
    /// Run the helper directly instead of through pkexec (it must be able to run as root).
    #[arg(long)]
    no_pkexec: bool,
    /// Also watch USER@HOST over ssh (repeatable; adds to [remote] hosts of the config).
    #[arg(long, value_name = "USER@HOST")]
    remote: Vec<String>,
    /// The configuration file [default: $XDG_CONFIG_HOME/conntrack-tray/config.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conntrack-tray: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn helper_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.helper {
        return p.clone();
    }
    if let Some(p) = HELPER_PATHS.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return p;
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("conntrack-tray-helper")))
        .unwrap_or_else(|| PathBuf::from(HELPER_PATHS[0]))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bus = zbus::blocking::Connection::session()
        .context("no D-Bus session bus (is this a desktop session?)")?;
    let flags = zbus::fdo::RequestNameFlags::DoNotQueue.into();
    match bus.request_name_with_flags(BUS_NAME, flags) {
        Ok(zbus::fdo::RequestNameReply::PrimaryOwner)
        | Ok(zbus::fdo::RequestNameReply::AlreadyOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => {
            println!("conntrack-tray is already running in this session");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).context("cannot register on the session bus"),
    }

    let path = cli
        .config
        .clone()
        .or_else(Settings::default_path)
        .context("no home directory for the configuration")?;
    let mut told = Vec::new();
    let settings = match Settings::load(path.clone()) {
        Ok(s) => s,
        Err(e) => {
            // Keep running on the defaults; the file is left alone until it is fixed.
            told.push(format!("{e} (using the defaults until it is fixed)"));
            Settings::defaults_at(path)
        }
    };
    let history = history::History::open(history::History::default_path());
    let (action_tx, action_rx) = unbounded();
    let notifier = notify::Notifier::connect(action_tx);
    let mut app = App::new(settings, history, notifier.caps.clone());

    // The icon is served either way: a tray that starts later (a panel restart) picks it up.
    if !tray::has_watcher(&bus) {
        told.push("no system tray (StatusNotifierWatcher) in this session: notifications only until one starts".into());
    }
    let mut tray = match tray::Tray::new() {
        Ok(t) => Some(t),
        Err(e) => {
            told.push(format!("no tray icon: {e}; notifications only"));
            None
        }
    };

    let local = if cli.no_pkexec || nix::unistd::Uid::effective().is_root() {
        Launch::Direct(helper_path(&cli))
    } else {
        Launch::Pkexec(helper_path(&cli))
    };
    let mut links = vec![Link::new(local)];
    let mut remotes = app.settings.config.remote.hosts.clone();
    remotes.extend(cli.remote.iter().cloned());
    remotes.dedup();
    links.extend(remotes.into_iter().map(|r| Link::new(Launch::Ssh(r))));

    let (helper_tx, helper_rx) = unbounded::<Msg>();
    for (i, l) in links.iter_mut().enumerate() {
        if let Err(e) = l.start(i, &helper_tx) {
            told.push(format!("cannot start the helper for {}: {e}", l.host));
            l.state = State::Stopped;
        }
    }
    let (sig_tx, sig_rx) = unbounded();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(s) = signals.forever().next() {
                let _ = sig_tx.send(s);
            }
        })?;

    let menu_rx = tray_icon::menu::MenuEvent::receiver();
    let ticks = tick(Duration::from_secs(1));
    for t in told.drain(..) {
        notifier.tell(&t);
    }
    refresh(&app, &links, tray.as_mut());

    loop {
        let now = Instant::now();
        let effects = select! {
            recv(sig_rx) -> _ => break,
            recv(helper_rx) -> m => match m {
                Ok(Msg::Event { link, gen, event }) if links.get(link).is_some_and(|l| l.gen() == gen) => {
                    let l = &mut links[link];
                    if let conntrack_tray_helper::Event::Hello { hostname, .. } = &*event {
                        // The helper knows its host's name (over ssh, the remote's).
                        if !hostname.is_empty() {
                            l.host = notify::clean(hostname, false);
                        }
                        l.running();
                        l.send(&commands::Command::Config {
                            config: Box::new(app.settings.config.helper_config()),
                        });
                        if app.settings.config.applet.paused {
                            l.send(&commands::Command::Pause);
                        }
                    }
                    let host = l.host.clone();
                    app.on_event(&host, *event, now)
                }
                Ok(Msg::Garbage { link, gen, line }) if links.get(link).is_some_and(|l| l.gen() == gen) => {
                    vec![Effect::Tell(format!("{}: unexpected helper output: {}", links[link].host, notify::clean(&line, false)))]
                }
                Ok(Msg::Closed { link, gen }) if links.get(link).is_some_and(|l| l.gen() == gen) => {
                    let l = &mut links[link];
                    l.closed(now);
                    match &l.state {
                        State::Refused => vec![Effect::Tell("monitoring was not authorized; use \"Start monitoring…\" in the menu to try again".into())],
                        _ => Vec::new(),
                    }
                }
                Ok(_) => Vec::new(),
                Err(_) => break,
            },
            recv(menu_rx) -> e => match e {
                Ok(e) => app.on_menu(e.id.0.as_str(), settings::autostart_enabled(), now),
                Err(_) => Vec::new(),
            },
            recv(action_rx) -> a => match a {
                Ok((id, action)) => app.on_action(id, &action, now),
                Err(_) => Vec::new(),
            },
            recv(ticks) -> _ => {
                for (i, l) in links.iter_mut().enumerate() {
                    if l.due(now) {
                        l.restarts += 1;
                        if let Err(e) = l.start(i, &helper_tx) {
                            notifier.tell(&format!("cannot restart the helper for {}: {e}", l.host));
                            l.closed(now);
                        }
                    }
                }
                app.on_tick(now)
            },
        };
        let mut quit = false;
        for effect in effects {
            quit |= perform(effect, &mut app, &mut links, &notifier, &helper_tx);
        }
        refresh(&app, &links, tray.as_mut());
        if quit {
            break;
        }
    }
    for l in &mut links {
        l.stop();
    }
    Ok(ExitCode::SUCCESS)
}

/// Carries out one effect; true to quit.
fn perform(
    effect: Effect,
    app: &mut App,
    links: &mut [Link],
    notifier: &notify::Notifier,
    tx: &crossbeam_channel::Sender<Msg>,
) -> bool {
    match effect {
        Effect::Notify { id, note } => {
            if let Err(e) = notifier.show(id, &note) {
                eprintln!("conntrack-tray: cannot show a notification: {e}");
            }
        }
        Effect::SendConfig => {
            let command = commands::Command::Config {
                config: Box::new(app.settings.config.helper_config()),
            };
            for l in links.iter_mut() {
                l.send(&command);
            }
        }
        Effect::Pause(p) => {
            let command = if p {
                commands::Command::Pause
            } else {
                commands::Command::Resume
            };
            for l in links.iter_mut() {
                l.send(&command);
            }
        }
        Effect::StartHelpers => {
            for (i, l) in links.iter_mut().enumerate() {
                if matches!(l.state, State::Refused | State::Stopped) {
                    if let Err(e) = l.start(i, tx) {
                        notifier.tell(&format!("cannot start the helper for {}: {e}", l.host));
                    }
                }
            }
        }
        Effect::Autostart(on) => {
            if let Err(e) = settings::set_autostart(on) {
                notifier.tell(&format!("cannot change start on login: {e}"));
            }
        }
        Effect::Open(path) => {
            if let Err(e) = desktop::open(&path) {
                notifier.tell(&format!("cannot open {}: {e}", path.display()));
            }
        }
        Effect::Copy(text) => {
            if !desktop::copy(&text) {
                notifier.tell(&text);
            }
        }
        Effect::Tell(text) => notifier.tell(&text),
        Effect::Quit => return true,
    }
    false
}

fn status(app: &App, links: &[Link]) -> (String, bool, bool) {
    let running: Vec<&Link> = links.iter().filter(|l| l.state == State::Running).collect();
    let can_start = links
        .iter()
        .any(|l| matches!(l.state, State::Refused | State::Stopped));
    let hosts: Vec<&str> = links.iter().map(|l| l.host.as_str()).collect();
    let text = if running.is_empty() {
        let why = links
            .iter()
            .map(|l| match &l.state {
                State::Restarting { why, .. } => format!("{}: helper {why}, restarting", l.host),
                State::Refused => format!("{}: not authorized", l.host),
                State::Starting => format!("{}: starting", l.host),
                State::Stopped => format!("{}: stopped", l.host),
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
            app.lost
        )
    };
    (text, can_start, !running.is_empty())
}

fn refresh(app: &App, links: &[Link], tray: Option<&mut tray::Tray>) {
    let Some(tray) = tray else { return };
    let (text, can_start, running) = status(app, links);
    let view = app.view(text.clone(), can_start, settings::autostart_enabled());
    if let Err(e) = tray.show(tray::menu(&view), app.icon_state(running), &text) {
        eprintln!("conntrack-tray: cannot update the tray: {e}");
    }
}
