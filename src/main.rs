//! conntrack-tray: the unprivileged tray applet. Wiring only: the CLI, the parts, and one
//! event loop over helper lines, menu clicks, a second launch's `Show` (`instance`),
//! notification buttons, a one-second tick and signals, handing each to its part; the
//! decisions are in `app` and `links`, the helper processes in `helper_proc`.

mod app;
mod desktop;
mod files;
#[cfg(test)]
mod fixtures;
mod helper_proc;
mod history;
mod icons;
mod instance;
mod links;
mod lost;
mod notify;
mod settings;
mod text;
mod tray;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crossbeam_channel::{bounded, select, tick, unbounded};

use app::{App, Effect};
use helper_proc::{Helpers, Launch, Msg};
use notify::Notifier;
use settings::Settings;

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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let bus = zbus::blocking::Connection::session()
        .context("no D-Bus session bus (is this a desktop session?)")?;
    // One per session: a second launch has the running one show itself.
    let (show_tx, show_rx) = bounded(1);
    if let instance::Claim::Taken = instance::claim(&bus, show_tx)? {
        let owner = instance::show_running()?;
        println!(
            "conntrack-tray is already running in this session ({owner}): told it to show itself"
        );
        return Ok(ExitCode::SUCCESS);
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
            // A broken file trusts nothing: run with an empty whitelist, leave the file alone,
            // and pick it up once it is fixed.
            told.push(format!(
                "{} — nothing is whitelisted until the file is fixed (it is left as it is)",
                text::line(&e.to_string())
            ));
            Settings::distrusting(path)
        }
    };
    let history = history::History::open(history::History::default_path());
    let (action_tx, action_rx) = unbounded();
    let notifier = Notifier::connect(action_tx);
    let mut app = App::new(settings, history, notifier.caps.clone());
    let today = history::today();
    let kept = app.history.count_day(&today);
    app.set_today(today, kept);

    // The icon is served either way: a tray that starts later (a panel restart) picks it up.
    if !tray::has_watcher(&bus) {
        told.push("no system tray (StatusNotifierWatcher) in this session: notifications only until one starts".into());
    }
    // The sender stays here too, so the channel stays open without a tray.
    let (menu_tx, menu_rx) = unbounded::<String>();
    let mut tray = match tray::Tray::new(menu_tx.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            told.push(format!("no tray icon: {e}; notifications only"));
            None
        }
    };

    let local = Launch::local(cli.helper.as_deref(), cli.no_pkexec);
    let mut remotes = app.settings.config.remote.hosts.clone();
    remotes.extend(cli.remote.iter().cloned());
    remotes.dedup();
    let (helper_tx, helper_rx) = unbounded::<Msg>();
    let mut helpers = Helpers::new(
        std::iter::once(local).chain(remotes.into_iter().map(Launch::Ssh)),
        helper_tx,
    );
    told.extend(
        helpers
            .start_all()
            .iter()
            .map(|e| text::line(&e.to_string())),
    );

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

    let ticks = tick(Duration::from_secs(1));
    for t in told.drain(..) {
        notifier.tell(&t);
    }
    refresh(&app, &helpers, tray.as_mut());

    loop {
        let now = Instant::now();
        let effects = select! {
            recv(sig_rx) -> _ => break,
            recv(helper_rx) -> m => match m {
                Ok(msg) => match helpers.receive(msg, now) {
                    Some(report) => links::on_report(&mut app, report, now),
                    None => Vec::new(),
                },
                Err(_) => break,
            },
            recv(menu_rx) -> id => match id {
                Ok(id) => app.on_menu(&id, settings::autostart_enabled(), now),
                Err(_) => Vec::new(),
            },
            recv(show_rx) -> _ => {
                // For now the status line; later a connections window opens instead.
                let status = links::status(&app, &helpers.states());
                vec![Effect::Tell(format!("conntrack-tray is running — {}", status.text))]
            },
            recv(action_rx) -> a => match a {
                Ok((id, action)) => app.on_action(id, &action, now),
                Err(_) => Vec::new(),
            },
            recv(ticks) -> _ => {
                for e in helpers.restart_due(now) {
                    notifier.tell(&text::line(&e.to_string()));
                }
                app.on_tick(now)
            },
        };
        let mut quit = false;
        for effect in effects {
            quit |= perform(effect, &app, &mut helpers, &notifier);
        }
        refresh(&app, &helpers, tray.as_mut());
        if quit {
            break;
        }
    }
    helpers.stop_all();
    Ok(ExitCode::SUCCESS)
}

/// Carries out one effect with the part it is for; true to quit.
fn perform(effect: Effect, app: &App, helpers: &mut Helpers, notifier: &Notifier) -> bool {
    match effect {
        Effect::Notify { id, note } => {
            if let Err(e) = notifier.show(id, &note) {
                eprintln!("conntrack-tray: cannot show a notification: {e}");
            }
        }
        Effect::SendConfig => helpers.send_all(&links::config_command(&app.settings.config)),
        Effect::Pause(p) => helpers.send_all(&links::pause_command(p)),
        Effect::Send { link, command } => helpers.send(link, &command),
        Effect::StartHelpers => {
            for e in helpers.start_stopped() {
                notifier.tell(&text::line(&e.to_string()));
            }
        }
        Effect::Autostart(on) => {
            if let Err(e) = settings::set_autostart(on) {
                notifier.tell(&format!(
                    "cannot change start on login: {}",
                    text::line(&e.to_string())
                ));
            }
        }
        Effect::Open(path) => {
            if let Err(e) = desktop::open(&path) {
                let what = format!("cannot open {}: {e}", path.display());
                notifier.tell(&text::line(&what));
            }
        }
        // The details, already for a person (`text::details`).
        Effect::Copy(details) => {
            if !desktop::copy(&details) {
                notifier.tell(&details);
            }
        }
        Effect::Tell(said) => notifier.tell(&said),
        Effect::Quit => return true,
    }
    false
}

/// Shows the menu, icon and tooltip for the current state (the tray skips an unchanged one).
fn refresh(app: &App, helpers: &Helpers, tray: Option<&mut tray::Tray>) {
    let Some(tray) = tray else { return };
    let status = links::status(app, &helpers.states());
    let view = app.view(
        status.text.clone(),
        status.can_start,
        settings::autostart_enabled(),
    );
    if let Err(e) = tray.show(
        tray::menu(&view),
        app.icon_state(status.running),
        &status.text,
    ) {
        eprintln!("conntrack-tray: cannot update the tray: {e}");
    }
}
