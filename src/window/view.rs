//! The window's widgets (egui): the Connections view (filters, the grouped list, the details
//! of one destination with its rule buttons, the exports) and the Rules view. All state is in
//! [`Window`]; [`Window::ui`] draws one frame from it, which is what the tests drive with
//! egui_kittest and what the window's loop (`runner`) calls on screen.
//!
//! Only text made by `model`, `rules` and `text` is shown, all of it sanitized where it was
//! made; nothing here puts an outside string on screen by itself.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use conntrack_tray_helper::{Direction, Proto};
use crossbeam_channel::Receiver;
use egui::{Color32, RichText};

use super::files::read_line_at;
pub use super::files::Batch;
use super::model::{self, Filter, GroupKey, Line, Model};
use super::rules::{self, Rule};
use crate::settings::{Edit, Settings};

/// How often the list is rebuilt while events stream in.
const REBUILD_EVERY: Duration = Duration::from_millis(250);
/// Time a frame may spend folding incoming events in before it draws.
const FOLD_BUDGET: Duration = Duration::from_millis(12);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Connections,
    Rules,
}

/// The time filter's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Any,
    Hour,
    Day,
    Week,
    Month,
}

impl Range {
    const ALL: [Range; 5] = [
        Range::Any,
        Range::Hour,
        Range::Day,
        Range::Week,
        Range::Month,
    ];

    fn label(self) -> &'static str {
        match self {
            Range::Any => "any time",
            Range::Hour => "last hour",
            Range::Day => "last 24 h",
            Range::Week => "last 7 days",
            Range::Month => "last 30 days",
        }
    }

    fn span(self) -> Option<Duration> {
        let h = 3600;
        match self {
            Range::Any => None,
            Range::Hour => Some(Duration::from_secs(h)),
            Range::Day => Some(Duration::from_secs(24 * h)),
            Range::Week => Some(Duration::from_secs(7 * 24 * h)),
            Range::Month => Some(Duration::from_secs(30 * 24 * h)),
        }
    }
}

/// "Only new": first contacted within this long.
pub const NEW_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// What the window is asked from outside (the applet, through its control input).
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Come to the front, scrolled to this destination if given.
    Focus(Option<GroupKey>),
    /// The applet quit.
    Close,
}

/// The details of the selected destination: its latest event.
struct Details {
    group: usize,
    fields: Vec<String>,
    /// The line as it is kept (JSON, hidden characters escaped).
    json: String,
    seen: Option<crate::history::Seen>,
}

/// The whole window.
pub struct Window {
    model: Model,
    segments: Vec<Arc<File>>,
    lines: Vec<Line>,
    dirty: bool,
    built: Option<Instant>,
    pub tab: Tab,
    pub search: String,
    pub port: String,
    pub proto: Option<Proto>,
    pub direction: Option<Direction>,
    pub machine: Option<String>,
    pub range: Range,
    pub only_new: bool,
    pub only_critical: bool,
    pub only_unknown: bool,
    shown_filter: Option<Filter>,
    selected: Option<usize>,
    details: Option<Details>,
    focus: Option<GroupKey>,
    scroll_to: Option<usize>,
    settings: Settings,
    rules: Vec<Rule>,
    pub export_to: String,
    /// The last thing said to the person (an export written, an edit refused).
    pub said: Option<String>,
    /// The last text put on the clipboard.
    pub copied: Option<String>,
    incoming: Option<Receiver<Batch>>,
    control: Option<Receiver<Control>>,
    caught_up: bool,
    /// The clock for the time filters; fixed in tests.
    pub now: Option<SystemTime>,
    /// `window --timing`: when the process started, to say once how long the history took.
    pub timing: Option<Instant>,
    /// The applet's mutes (host, "" for every host; program; end in seconds since 1970), as
    /// it last answered; and the unmutes asked for.
    pub mutes: Vec<(String, String, u64)>,
    pub unmuted: Vec<(String, String)>,
    /// The session bus, to ask the applet for its mutes (`None` in tests).
    pub bus: Option<zbus::blocking::Connection>,
    mutes_asked: Option<Instant>,
}

impl Window {
    pub fn new(settings: Settings) -> Window {
        let export_to = directories::BaseDirs::new()
            .map(|b| b.home_dir().join("conntrack-tray-connections"))
            .unwrap_or_else(|| PathBuf::from("conntrack-tray-connections"))
            .display()
            .to_string();
        let rules = rules::rules(&settings.config);
        Window {
            model: Model::default(),
            segments: Vec::new(),
            lines: Vec::new(),
            dirty: true,
            built: None,
            tab: Tab::Connections,
            search: String::new(),
            port: String::new(),
            proto: None,
            direction: None,
            machine: None,
            range: Range::Any,
            only_new: false,
            only_critical: false,
            only_unknown: false,
            shown_filter: None,
            selected: None,
            details: None,
            focus: None,
            scroll_to: None,
            settings,
            rules,
            export_to,
            said: None,
            copied: None,
            incoming: None,
            control: None,
            caught_up: false,
            now: None,
            timing: None,
            mutes: Vec::new(),
            unmuted: Vec::new(),
            bus: None,
            mutes_asked: None,
        }
    }

    /// Events read from the history (tests read it whole first).
    #[cfg(test)]
    pub fn with_history(mut self, segments: Vec<Arc<File>>, rows: Vec<model::Row>) -> Window {
        self.segments = segments;
        for r in rows {
            self.model.add(r);
        }
        self.caught_up = true;
        self
    }

    /// Batches from the history reader, and the applet's requests.
    pub fn with_sources(
        mut self,
        incoming: Receiver<Batch>,
        control: Option<Receiver<Control>>,
    ) -> Window {
        self.incoming = Some(incoming);
        self.control = control;
        self
    }

    pub fn focus_on(&mut self, key: Option<GroupKey>) {
        self.focus = key;
    }

    /// The filter the controls describe now.
    pub fn filter(&self) -> Filter {
        let now = self.now.unwrap_or_else(SystemTime::now);
        let ago = |d: Duration| {
            conntrack_tray_helper::pipeline::timestamp(now.checked_sub(d).unwrap_or(now))
        };
        Filter {
            text: self.search.clone(),
            port: self.port.trim().parse().ok(),
            proto: self.proto,
            direction: self.direction,
            machine: self.machine.clone(),
            since: self.range.span().map(ago),
            new_since: self.only_new.then(|| ago(NEW_WITHIN)),
            only_critical: self.only_critical,
            only_unknown: self.only_unknown,
        }
    }

    /// The destinations shown, in order.
    pub fn shown(&self) -> impl Iterator<Item = &model::Group> {
        self.lines.iter().filter_map(|l| match l {
            Line::Destination(i) => self.model.group(*i),
            Line::Program { .. } => None,
        })
    }

    /// Takes what the reader and the applet sent; true when more is waiting.
    fn take_input(&mut self, ctx: &egui::Context) -> bool {
        if let Some(rx) = &self.control {
            while let Ok(c) = rx.try_recv() {
                match c {
                    Control::Focus(key) => {
                        ctx.send_viewport_cmd(egui::ViewportCommand::Minimized(false));
                        ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
                        if key.is_some() {
                            self.focus = key;
                        }
                    }
                    Control::Close => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
                }
            }
        }
        let Some(rx) = &self.incoming else {
            return false;
        };
        let start = Instant::now();
        while start.elapsed() < FOLD_BUDGET {
            let Ok(batch) = rx.try_recv() else {
                return false;
            };
            self.segments.extend(batch.segments);
            self.caught_up |= batch.caught_up;
            if !batch.rows.is_empty() {
                self.dirty = true;
            }
            for r in batch.rows {
                self.model.add(r);
            }
        }
        true
    }

    /// Rebuilds the list when the filter or the data changed (data at most every
    /// [`REBUILD_EVERY`] while it streams in).
    fn rebuild(&mut self) {
        let filter = self.filter();
        let data_due = self.dirty
            && (self.caught_up || self.built.is_none_or(|t| t.elapsed() >= REBUILD_EVERY));
        if self.shown_filter.as_ref() == Some(&filter) && !data_due {
            return;
        }
        self.lines = self.model.lines(&filter);
        self.shown_filter = Some(filter);
        self.dirty = false;
        self.built = Some(Instant::now());
    }

    /// Scrolls to and opens the destination asked for, once it has been read.
    fn apply_focus(&mut self) {
        let Some(key) = &self.focus else { return };
        let Some(i) = self.model.find(key) else {
            if self.caught_up {
                self.said = Some("that connection is not in the kept history".into());
                self.focus = None;
            }
            return;
        };
        let mut at = self.lines.iter().position(|l| *l == Line::Destination(i));
        if at.is_none() {
            // Hidden by a filter: every filter off.
            self.search.clear();
            self.port.clear();
            (self.proto, self.direction, self.machine) = (None, None, None);
            self.range = Range::Any;
            (self.only_new, self.only_critical, self.only_unknown) = (false, false, false);
            self.rebuild();
            at = self.lines.iter().position(|l| *l == Line::Destination(i));
        }
        self.focus = None;
        self.tab = Tab::Connections;
        self.scroll_to = at;
        self.select(i);
    }

    fn select(&mut self, group: usize) {
        self.selected = Some(group);
        let Some(g) = self.model.group(group) else {
            return;
        };
        let line = self
            .segments
            .get(g.latest.segment)
            .ok_or_else(|| std::io::Error::other("file not open"))
            .and_then(|f| read_line_at(f, g.latest.offset));
        self.details = Some(match line {
            Ok(l) => {
                let value: serde_json::Value =
                    serde_json::from_str(&l).unwrap_or(serde_json::Value::Null);
                Details {
                    group,
                    fields: model::fields(&value),
                    json: conntrack_tray_helper::sanitize::json_line(&l).into_owned(),
                    seen: crate::history::parse_line(&l),
                }
            }
            Err(e) => Details {
                group,
                fields: vec![format!(
                    "cannot read this event back: {}",
                    crate::text::line(&e.to_string())
                )],
                json: String::new(),
                seen: None,
            },
        });
    }

    fn copy(&mut self, ctx: &egui::Context, text: String) {
        ctx.copy_text(text.clone());
        self.copied = Some(text);
        self.said = Some("copied".into());
    }

    fn edit(&mut self, edit: Edit) {
        self.said = Some(match self.settings.apply(&edit) {
            Ok(()) => "added to the whitelist; the applet uses it at once".into(),
            Err(e) => format!(
                "could not change the configuration: {}",
                crate::text::line(&e.to_string())
            ),
        });
        self.rules = rules::rules(&self.settings.config);
    }

    fn remove(&mut self, rule: &Rule) {
        self.said = Some(
            match self.settings.apply_with(|doc| rules::remove(doc, rule)) {
                Ok(()) => format!("removed {}", rule.label()),
                Err(e) => format!(
                    "could not change the configuration: {}",
                    crate::text::line(&e.to_string())
                ),
            },
        );
        self.rules = rules::rules(&self.settings.config);
    }

    fn export(&mut self, csv: bool) {
        let (text, ext) = if csv {
            (model::export_csv(self.shown()), "csv")
        } else {
            (model::export_jsonl(self.shown()), "jsonl")
        };
        let path = PathBuf::from(format!("{}.{ext}", self.export_to.trim()));
        let n = self.shown().count();
        self.said = Some(
            match crate::files::write_atomically(&path, text.as_bytes()) {
                Ok(()) => format!(
                    "{n} rows written to {}",
                    crate::text::line(&path.display().to_string())
                ),
                Err(e) => format!(
                    "cannot write {}: {}",
                    crate::text::line(&path.display().to_string()),
                    crate::text::line(&e.to_string())
                ),
            },
        );
    }

    /// One frame.
    pub fn ui(&mut self, ctx: &egui::Context) {
        let more = self.take_input(ctx);
        if let Some(Ok(())) = self.settings.reload_if_changed() {
            self.rules = rules::rules(&self.settings.config);
        }
        self.rebuild();
        self.apply_focus();
        if let Some(start) = self.timing.filter(|_| self.caught_up && !self.dirty) {
            eprintln!(
                "conntrack-tray window: {} events in {} destinations read and listed in {} ms",
                self.model.events,
                self.model.len(),
                start.elapsed().as_millis()
            );
            self.timing = None;
        }
        if more || (self.dirty && !self.caught_up) {
            ctx.request_repaint_after(Duration::from_millis(50));
        }
        egui::TopBottomPanel::top("top").show(ctx, |ui| self.top(ui));
        egui::TopBottomPanel::bottom("said").show(ctx, |ui| {
            let status = format!(
                "{} events, {} destinations{}",
                self.model.events,
                self.model.len(),
                if self.caught_up {
                    ""
                } else {
                    " (reading the history…)"
                }
            );
            ui.horizontal(|ui| {
                ui.label(status);
                if let Some(s) = &self.said {
                    ui.separator();
                    ui.label(s.as_str());
                }
            });
        });
        match self.tab {
            Tab::Connections => {
                if self.details.is_some() {
                    egui::SidePanel::right("details")
                        .default_width(380.0)
                        .show(ctx, |ui| self.details_ui(ui));
                }
                egui::CentralPanel::default().show(ctx, |ui| self.list(ui));
            }
            Tab::Rules => {
                egui::CentralPanel::default().show(ctx, |ui| self.rules_ui(ui));
            }
        }
    }

    fn top(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.tab, Tab::Connections, "Connections");
            ui.selectable_value(&mut self.tab, Tab::Rules, "Rules");
        });
        if self.tab != Tab::Connections {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            let l = ui.label("Search");
            ui.add(
                egui::TextEdit::singleline(&mut self.search)
                    .hint_text("program, host or address")
                    .desired_width(200.0),
            )
            .labelled_by(l.id);
            let l = ui.label("Port");
            ui.add(egui::TextEdit::singleline(&mut self.port).desired_width(48.0))
                .labelled_by(l.id);
            let protos = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Icmpv6];
            choice(ui, "Protocol", &mut self.proto, &protos, |p| p.to_string());
            let dirs = [Direction::Outbound, Direction::Inbound, Direction::Forward];
            choice(ui, "Direction", &mut self.direction, &dirs, |d| {
                d.to_string()
            });
            let machines: Vec<String> = self.model.machines.iter().cloned().collect();
            choice(ui, "Machine", &mut self.machine, &machines, |m| {
                crate::text::host(m)
            });
            ui.label("Time");
            egui::ComboBox::from_id_salt("Time")
                .selected_text(self.range.label())
                .show_ui(ui, |ui| {
                    for r in Range::ALL {
                        ui.selectable_value(&mut self.range, r, r.label());
                    }
                });
        });
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut self.only_new, "Only new (24 h)");
            ui.checkbox(&mut self.only_critical, "Only critical");
            ui.checkbox(&mut self.only_unknown, "Only unknown process");
            ui.separator();
            let l = ui.label("Export to");
            ui.add(egui::TextEdit::singleline(&mut self.export_to).desired_width(220.0))
                .labelled_by(l.id);
            if ui.button("Export JSONL").clicked() {
                self.export(false);
            }
            if ui.button("Export CSV").clicked() {
                self.export(true);
            }
        });
    }

    fn list(&mut self, ui: &mut egui::Ui) {
        if self.lines.is_empty() {
            ui.label(if self.model.len() == 0 {
                "No connections kept yet."
            } else {
                "No connection matches the filters."
            });
            return;
        }
        let row_h = ui.spacing().interact_size.y;
        let mut area = egui::ScrollArea::vertical()
            .id_salt("rows")
            .auto_shrink([false, false]);
        if let Some(at) = self.scroll_to.take() {
            let spaced = row_h + ui.spacing().item_spacing.y;
            area = area.vertical_scroll_offset((at as f32 * spaced - 3.0 * spaced).max(0.0));
        }
        let mut clicked = None;
        area.show_rows(ui, row_h, self.lines.len(), |ui, range| {
            for line in &self.lines[range] {
                match *line {
                    Line::Program {
                        first,
                        events,
                        destinations,
                    } => {
                        let Some(g) = self.model.group(first) else {
                            continue;
                        };
                        ui.label(RichText::new(program_heading(g, events, destinations)).strong());
                    }
                    Line::Destination(i) => {
                        let Some(g) = self.model.group(i) else {
                            continue;
                        };
                        let mut text = RichText::new(destination_row(g));
                        if g.critical {
                            text = text.color(Color32::from_rgb(0xd0, 0x40, 0x20));
                        }
                        let r = ui.horizontal(|ui| {
                            ui.add_space(18.0);
                            ui.selectable_label(self.selected == Some(i), text)
                        });
                        if r.inner.clicked() {
                            clicked = Some(i);
                        }
                    }
                }
            }
        });
        if let Some(i) = clicked {
            self.select(i);
        }
    }
}

mod panels;
use panels::{destination_row, program_heading};

/// A combo box of `choices` with "any" for `None`.
fn choice<T: Clone + PartialEq>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut Option<T>,
    choices: &[T],
    name: impl Fn(&T) -> String,
) {
    let shown = value.as_ref().map(&name).unwrap_or_else(|| "any".into());
    ui.label(label);
    egui::ComboBox::from_id_salt(label)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            ui.selectable_value(value, None, "any");
            for c in choices {
                ui.selectable_value(value, Some(c.clone()), name(c));
            }
        });
}
