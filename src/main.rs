//! conntrack-tray: the unprivileged tray applet. Wiring only: the CLI, the parts, and one
//! event loop over helper lines, menu clicks, a second launch's `Show` (`instance`),
//! notification buttons, a one-second tick and signals, handing each to its part; the
//! decisions are in `app` and `links`, the helper processes in `helper_proc`.

mod alerts;
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
mod novelty;
mod own;
mod pins;
mod refusal;
mod settings;
mod setup;
mod started_by;
mod text;
mod tray;
mod watch;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use crossbeam_channel::{after, bounded, never, select, unbounded};

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
    #[arg(long, overrides_with = "pkexec")]
    no_pkexec: bool,
    /// Start the helper through pkexec even when the applet is root (the tests' way to try
    /// the pkexec path with a stand-in pkexec on PATH).
    #[arg(long, hide = true, overrides_with = "no_pkexec")]
    pkexec: bool,
    /// Also watch USER@HOST over ssh (repeatable; adds to [remote] hosts of the config).
    #[arg(long, value_name = "USER@HOST")]
    remote: Vec<String>,
    /// The configuration file [default: $XDG_CONFIG_HOME/conntrack-tray/config.toml].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// The connections window (the tray's "Show connections…" starts it).
    Window {
        /// Open scrolled to this connection (as the applet names it).
        #[arg(long, value_name = "KEY")]
        focus: Option<String>,
        /// Take requests from the applet on stdin.
        #[arg(long, hide = true)]
        control: bool,
        /// Print how long reading the history took (scripts/window-bench.sh).
        #[arg(long, hide = true)]
        timing: bool,
    },
    /// Watching other hosts over ssh.
    Remote {
        #[command(subcommand)]
        what: RemoteCmd,
    },
}

#[derive(clap::Subcommand, Debug)]
enum RemoteCmd {
    /// Checks that USER@HOST can be watched (ssh login without a prompt, the helper there,
    /// sudo without a password) and prints the sudoers line and the config lines it needs.
    Setup {
        /// USER@HOST, HOST, or ssh://USER@HOST:PORT.
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Remote {
        what: RemoteCmd::Setup { target },
    }) = &cli.command
    {
        // The helper the applet would run there: `[remote] helper` of its configuration.
        let configured = cli
            .config
            .clone()
            .or_else(Settings::default_path)
            .map(Settings::load)
            .and_then(|s| match s {
                Ok(s) => s.config.remote.helper,
                Err(e) => {
                    eprintln!("conntrack-tray: {e:#}; looking in the default places");
                    None
                }
            });
        let (report, ready) = setup::check(&mut setup::RealSsh, target, configured.as_deref());
        print!("{report}");
        return if ready {
            println!("\n{target} is ready to be watched.");
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    if let Some(Sub::Window {
        focus,
        control,
        timing,
    }) = &cli.command
    {
        let opened = cli
            .config
            .clone()
            .or_else(Settings::default_path)
            .zip(history::History::default_path())
            .context("no home directory for the configuration and the history")
            .and_then(|(config, history)| {
                window::run(window::Options {
                    config,
                    history,
                    focus: focus.clone(),
                    control: *control,
                    timing: *timing,
                })
            });
        return match opened {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("conntrack-tray: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match run(cli) {
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
    let mutes = instance::Mutes::default();
    let (unmute_tx, unmute_rx) = bounded(16);
    if let instance::Claim::Taken = instance::claim(&bus, show_tx, mutes.clone(), unmute_tx)? {
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
    let learned = novelty::Learned::open(novelty::Learned::default_path());
    let (reply_tx, reply_rx) = unbounded();
    let mut notifier = Notifier::connect(&bus, reply_tx);
    let mut app = App::new(settings, history, learned, notifier.caps.clone());
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

    let local = if cli.pkexec {
        Launch::Pkexec(helper_proc::helper_path(cli.helper.as_deref()))
    } else {
        Launch::local(cli.helper.as_deref(), cli.no_pkexec)
    };
    let remote_helper = app
        .settings
        .config
        .remote
        .helper
        .clone()
        .unwrap_or_else(|| helper_proc::REMOTE_HELPER.to_string());
    let remotes = helper_proc::distinct_targets(
        app.settings
            .config
            .remote
            .hosts
            .iter()
            .chain(cli.remote.iter())
            .cloned(),
    );
    let (helper_tx, helper_rx) = unbounded::<Msg>();
    let mut helpers = Helpers::new(
        std::iter::once(local).chain(remotes.into_iter().map(|target| Launch::Ssh {
            target,
            helper: remote_helper.clone(),
        })),
        helper_tx,
    );
    told.extend(
        helpers
            .start_all()
            .iter()
            .map(|e| text::line(&e.to_string())),
    );
    app.set_links(helpers.ssh_links());

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

    let (settings_tx, settings_rx) = bounded(1);
    if let Err(e) = watch::settings(app.settings.path(), settings_tx) {
        told.push(format!(
            "cannot watch the settings file for changes ({e}): edits made outside the applet are read only after a restart"
        ));
    }
    for t in told.drain(..) {
        notifier.tell(&t);
    }
    refresh(&app, &helpers, tray.as_mut());

    // The connections window: started on demand, nothing of it runs while it is closed.
    let mut window = window::launch::Launcher::default();
    let mut next_beat = Instant::now() + conntrack_tray_helper::commands::HEARTBEAT_EVERY;
    loop {
        // No timer runs unless something is due: an idle applet sleeps until an event.
        // While a host waits to reconnect, its countdown in the status line moves each second.
        let countdown = helpers
            .states()
            .iter()
            .any(|(_, s)| matches!(s, helper_proc::State::Restarting { .. }))
            .then(|| Instant::now() + std::time::Duration::from_secs(1));
        let beat = helpers.any_remote().then_some(next_beat);
        let due = [app.next_due(), helpers.next_due(), countdown, beat]
            .into_iter()
            .flatten()
            .min();
        let timer = match due {
            Some(t) => after(t.saturating_duration_since(Instant::now())),
            None => never(),
        };
        let effects = select! {
            recv(sig_rx) -> _ => break,
            recv(helper_rx) -> m => match m {
                Ok(msg) => match helpers.receive(msg, Instant::now()) {
                    Some(report) => {
                        // A link that says hello has its ssh connection up: know it as ours.
                        if matches!(&report, helper_proc::Report::Event { event, .. }
                            if matches!(**event, conntrack_tray_helper::Event::Hello { .. }))
                        {
                            app.set_links(helpers.ssh_links());
                        }
                        links::on_report(&mut app, report, Instant::now())
                    }
                    None => Vec::new(),
                },
                Err(_) => break,
            },
            recv(menu_rx) -> id => match id {
                Ok(id) => app.on_menu(&id, settings::autostart_enabled(), Instant::now()),
                Err(_) => Vec::new(),
            },
            recv(show_rx) -> _ => vec![Effect::ShowWindow(None)],
            recv(unmute_rx) -> m => {
                if let Ok((host, program)) = m {
                    app.unmute(&host, &program);
                }
                Vec::new()
            },
            recv(reply_rx) -> r => match r {
                Ok(notify::Reply::Action(server_id, action)) => match notifier.pressed(server_id, &action) {
                    Some(id) => app.on_action(id, &action, Instant::now()),
                    None => Vec::new(),
                },
                Ok(notify::Reply::Closed(server_id)) => {
                    if let Some(id) = notifier.forget(server_id) {
                        app.on_closed(id);
                    }
                    Vec::new()
                }
                Err(_) => Vec::new(),
            },
            recv(settings_rx) -> _ => app.on_tick(Instant::now()),
            recv(timer) -> _ => {
                let now = Instant::now();
                if now >= next_beat {
                    helpers.heartbeat();
                    next_beat = now + conntrack_tray_helper::commands::HEARTBEAT_EVERY;
                }
                for e in helpers.restart_due(now) {
                    notifier.tell(&text::line(&e.to_string()));
                }
                app.set_links(helpers.ssh_links());
                app.on_tick(now)
            },
        };
        let mut quit = false;
        for effect in effects {
            quit |= perform(effect, &mut app, &mut helpers, &mut notifier, &mut window);
        }
        refresh(&app, &helpers, tray.as_mut());
        if let Ok(mut m) = mutes.lock() {
            *m = app.mutes(Instant::now());
        }
        if quit {
            break;
        }
    }
    // Its notifications go with it: their buttons would do nothing.
    for effect in app.on_quit() {
        perform(effect, &mut app, &mut helpers, &mut notifier, &mut window);
    }
    helpers.stop_all();
    Ok(ExitCode::SUCCESS)
}

/// Carries out one effect with the part it is for; true to quit.
fn perform(
    effect: Effect,
    app: &mut App,
    helpers: &mut Helpers,
    notifier: &mut Notifier,
    window: &mut window::launch::Launcher,
) -> bool {
    match effect {
        // Without a display there is no window to show: the status line instead.
        Effect::ShowWindow(_) if !window::launch::has_display() => {
            let status = status_of(app, helpers);
            notifier.tell(&format!("conntrack-tray is running — {}", status.text));
        }
        Effect::ShowWindow(focus) => {
            if let Err(e) = window.show(app.settings.path(), focus.as_ref()) {
                notifier.tell(&format!(
                    "cannot open the connections window: {}",
                    text::line(&e.to_string())
                ));
            }
        }
        Effect::Notify { id, note } => {
            if let Err(e) = notifier.show(id, &note) {
                eprintln!("conntrack-tray: cannot show a notification: {e}");
            }
        }
        Effect::Close(id) => notifier.close(id),
        Effect::SendConfig => {
            let config = &app.settings.config;
            helpers.send_each(|host| links::config_command(config, host));
        }
        Effect::Pause(p) => helpers.send_all(&links::pause_command(p)),
        Effect::Send { link, command } => helpers.send(link, &command),
        Effect::RestartNow(link) => {
            for e in helpers.restart_now(link, Instant::now()) {
                notifier.tell(&text::line(&e.to_string()));
            }
            app.set_links(helpers.ssh_links());
        }
        Effect::Hold(link) => helpers.hold(link),
        Effect::StartHelpers => {
            for e in helpers.start_stopped() {
                notifier.tell(&text::line(&e.to_string()));
            }
            app.set_links(helpers.ssh_links());
        }
        Effect::Autostart(on) => {
            if let Err(e) = settings::set_autostart(on) {
                notifier.tell(&format!(
                    "cannot change start on login: {}",
                    text::line(&e.to_string())
                ));
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
    let status = status_of(app, helpers);
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

/// The status of the links now: their labels (a remote host's own name beside it) and states.
fn status_of(app: &App, helpers: &Helpers) -> links::Status {
    let owned = helpers.status_states();
    let states: Vec<(&str, &helper_proc::State)> =
        owned.iter().map(|(h, s)| (h.as_str(), *s)).collect();
    links::status(app, &states, Instant::now())
}
