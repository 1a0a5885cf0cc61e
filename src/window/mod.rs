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
}

/// Runs the window until it is closed.
pub fn run(o: Options) -> anyhow::Result<()> {
    let settings = match Settings::load(o.config.clone()) {
        Ok(s) => s,
        // The window shows the rules of a broken file as none, and refuses to edit it.
        Err(e) => {
            eprintln!("conntrack-tray window: {e}");
            Settings::distrusting(o.config.clone())
        }
    };
    let (batch_tx, batch_rx) = crossbeam_channel::bounded(8);
    let control = o.control.then(|| {
        let (tx, rx) = crossbeam_channel::bounded(4);
        // The applet's requests; its end closing (the applet quit) leaves the window open.
        let spawned = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    let key = GroupKey::from_line(&line);
                    if tx.send(Control::Focus(key)).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("conntrack-tray window: no control input: {e}");
        }
        rx
    });
    let dark = theme::prefers_dark();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_app_id("conntrack-tray")
            .with_inner_size([1000.0, 640.0])
            .with_min_inner_size([520.0, 320.0]),
        ..Default::default()
    };
    let history = o.history;
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
            let ctx = cc.egui_ctx.clone();
            if let Err(e) =
                files::follow(history, batch_tx, Box::new(move || ctx.request_repaint()))
            {
                eprintln!("conntrack-tray window: cannot read the history: {e}");
            }
            let mut w = Window::new(settings).with_sources(batch_rx, control);
            w.focus_on(focus);
            Ok(Box::new(App(w)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("cannot open the window (no X11 or Wayland display, or no OpenGL)")
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
