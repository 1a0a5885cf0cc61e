//! The connections window, *conntrack-tray: Connections*: a child process the applet starts
//! on demand (`conntrack-tray window`), so a closed window costs the applet nothing: no
//! thread, no timer, no GL context, no memory beyond the code.
//!
//! It reads the kept history (`files`), folds it into one row per program and destination
//! (`model`), draws it with egui, rasterized on the CPU (`view`, `runner`), and edits the whitelist
//! through `Settings` (`rules`), whose writes the applet picks up with inotify. The applet
//! talks to it over its stdin only (`launch`): a line with a destination to show brings the
//! open window to the front instead of starting a second one.

pub mod files;
pub mod launch;
pub mod model;
pub mod rules;
mod runner;
mod theme;
pub mod view;

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::settings::Settings;
use model::GroupKey;
use view::{Control, Window};

/// The window's title, which the end-to-end test and the screenshot look for. ASCII only:
/// winit also sets the old Latin-1 `WM_NAME`, where a dash outside Latin-1 came out garbled
/// for window managers and tools that read that one.
pub const TITLE: &str = "conntrack-tray: Connections";

/// New events are drawn at most this often (the history read at start as fast as it is
/// read). Each new batch asks for a frame this much later, so
/// the batches of a busy second share ten frames: drawn on the CPU, a frame per batch took
/// 88% of a core at 1,000 events a second, and the list is only rebuilt every 250 ms anyway.
const LIVE_FRAME: std::time::Duration = std::time::Duration::from_millis(100);

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
    let viewport = egui::ViewportBuilder::default()
        .with_title(TITLE)
        .with_app_id("conntrack-tray")
        .with_inner_size([1000.0, 640.0])
        .with_min_inner_size([520.0, 320.0]);
    let history = o.history.clone();
    let focus = o.focus.as_deref().and_then(GroupKey::from_line);
    runner::run(viewport, move |ctx| {
        ctx.set_theme(if dark {
            egui::Theme::Dark
        } else {
            egui::Theme::Light
        });
        // A blinking text cursor is a whole frame drawn on the CPU twice a second (3–4% of a
        // core while the search box has the focus): it stays lit instead.
        ctx.all_styles_mut(|s| s.visuals.text_cursor.blink = false);
        let control = o.control.then(|| control_input(ctx.clone()));
        let waker = ctx.clone();
        let wake = Box::new(move |live| match live {
            true => waker.request_repaint_after(LIVE_FRAME),
            false => waker.request_repaint(),
        });
        if let Err(e) = files::follow(history, batch_tx, wake) {
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
        move |ctx: &egui::Context| w.ui(ctx)
    })
    .context("cannot open the window (no X11 or Wayland display)")
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

#[cfg(test)]
#[path = "view_tests.rs"]
mod view_tests;
