//! The connections window, *conntrack-tray — Connections*: a child process the applet starts
//! on demand (`conntrack-tray window`), so a closed window costs the applet nothing: no
//! thread, no timer, no GL context, no memory beyond the code.
//!
//! It reads the kept history (`files`), folds it into one row per program and destination
//! (`model`), draws it with egui on eframe's glow backend (`view`), and edits the whitelist
//! through `Settings` (`rules`), whose writes the applet picks up with inotify. The applet
//! talks to it over its stdin only (`launch`): a line with a destination to show brings the
//! open window to the front instead of starting a second one.

pub mod files;
pub mod launch;
pub mod model;
pub mod rules;
mod theme;
pub mod view;

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context as _;
use eframe::egui;

use crate::settings::Settings;
use model::GroupKey;
use view::{Control, Window};

/// The window's title, which the end-to-end test and the screenshot look for.
pub const TITLE: &str = "conntrack-tray — Connections";

/// How the window was asked to open.
pub struct Options {
    pub config: PathBuf,
    pub history: PathBuf,
    /// Open scrolled to this destination (a `GroupKey` line).
    pub focus: Option<String>,
    /// Read [`Control`] lines from stdin (started by the applet).
    pub control: bool,
    /// Say on stderr how long reading the history took (the benchmark's).
    pub timing: bool,
}

/// Runs the window until it is closed.
pub fn run(o: Options) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let settings = match Settings::load(o.config.clone()) {
        Ok(s) => s,
        // The window shows the rules of a broken file as none, and refuses to edit it.
        Err(e) => {
            eprintln!("conntrack-tray window: {e}");
            Settings::distrusting(o.config.clone())
        }
    };
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(8);
    let dark = theme::prefers_dark();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_app_id("conntrack-tray")
            .with_inner_size([1000.0, 640.0])
            .with_min_inner_size([520.0, 320.0]),
        // X11 where there is one (XWayland too): there the window manager draws the title
        // bar, which winit on Wayland leaves to the application (GNOME has none to lend).
        event_loop_builder: std::env::var_os("DISPLAY").filter(|d| !d.is_empty()).map(
            |_| -> eframe::EventLoopBuilderHook {
                Box::new(|b| {
                    use winit::platform::x11::EventLoopBuilderExtX11;
                    b.with_x11();
                })
            },
        ),
        ..Default::default()
    };
    let history = o.history.clone();
    let focus = o.focus.as_deref().and_then(GroupKey::from_line);
    eframe::run_native(
        TITLE,
        options,
        Box::new(move |cc| {
            cc.egui_ctx.set_theme(if dark {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            });
            let control = o.control.then(|| control_input(cc.egui_ctx.clone()));
            let ctx = cc.egui_ctx.clone();
            if let Err(e) =
                files::follow(history, batch_tx, Box::new(move || ctx.request_repaint()))
            {
                eprintln!("conntrack-tray window: cannot read the history: {e}");
            }
            let mut w = Window::new(settings).with_sources(batch_rx, control);
            w.focus_on(focus);
            w.timing = o.timing.then_some(start);
            w.bus = zbus::blocking::connection::Builder::session()
                .and_then(|b| {
                    b.method_timeout(std::time::Duration::from_millis(500))
                        .build()
                })
                .ok();
            Ok(Box::new(App(w)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("cannot open the window (no X11 or Wayland display, or no OpenGL)")
}

/// The applet's requests on stdin, until it quits; each wakes the window.
fn control_input(ctx: egui::Context) -> crossbeam_channel::Receiver<Control> {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let spawned = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(Control::Focus(GroupKey::from_line(&line))).is_err() {
                    return;
                }
                ctx.request_repaint();
            }
            // The applet is gone: its window goes with it.
            let _ = tx.send(Control::Close);
            ctx.request_repaint();
        });
    if let Err(e) = spawned {
        eprintln!("conntrack-tray window: no control input: {e}");
    }
    rx
}

struct App(Window);

impl eframe::App for App {
    fn update(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.0.ui(ctx);
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod view_tests;
