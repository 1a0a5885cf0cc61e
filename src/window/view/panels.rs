//! The Connections view's details panel and the Rules view, and how a row reads: the parts
//! of [`Window`] that show one connection or one entry.

use conntrack_tray_helper::Direction;
use egui::RichText;

use super::super::model;
use super::Window;
use crate::settings::Edit;

impl Window {
    pub(super) fn details_ui(&mut self, ui: &mut egui::Ui) {
        let Some(d) = &self.details else { return };
        let group = d.group;
        ui.horizontal(|ui| {
            ui.heading("Details");
            if ui.button("Close").clicked() {
                self.selected = None;
            }
        });
        if self.selected.is_none() {
            self.details = None;
            return;
        }
        if let Some(g) = self.model.group(group) {
            ui.label(RichText::new(format!("{} to {}", g.program(), g.destination())).strong());
        }
        let text = d.fields.join("\n");
        let json = d.json.clone();
        let seen = d.seen.clone();
        let mut copy = None;
        ui.horizontal(|ui| {
            if ui.button("Copy as text").clicked() {
                copy = Some(text.clone());
            }
            if ui.button("Copy as JSON").clicked() && !json.is_empty() {
                copy = Some(json.clone());
            }
        });
        if let Some(t) = copy {
            self.copy(ui.ctx(), t);
        }
        if let Some(seen) = seen {
            let edits = self.rule_buttons(&seen);
            let mut chosen = None;
            ui.horizontal_wrapped(|ui| {
                for (label, edit) in edits {
                    if ui.button(label).clicked() {
                        chosen = Some(edit);
                    }
                }
            });
            if let Some(e) = chosen {
                self.edit(e);
            }
        }
        ui.separator();
        egui::ScrollArea::vertical()
            .id_salt(("fields", group))
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if let Some(d) = &self.details {
                    for f in &d.fields {
                        ui.add(egui::Label::new(f.as_str()).selectable(true).wrap());
                    }
                }
            });
    }

    /// The whitelist entries a connection offers, as in its notification: the exe's path (a
    /// name is not evidence), the address, and a name only the system's resolver gave.
    fn rule_buttons(&self, seen: &crate::history::Seen) -> Vec<(String, Edit)> {
        let c = &seen.conn;
        let remote_host = self
            .settings
            .config
            .remote
            .hosts
            .iter()
            .any(|h| h == &seen.host);
        let on = |s: String| {
            if remote_host {
                format!("{s} on {}", crate::text::host(&seen.host))
            } else {
                s
            }
        };
        let mut out = Vec::new();
        if let (Some(exe), Some(name)) = (
            crate::text::whitelistable_exe(c).map(str::to_string),
            crate::text::exe_name(c),
        ) {
            let edit = if remote_host {
                Edit::WhitelistProcessOn {
                    host: seen.host.clone(),
                    process: exe,
                }
            } else {
                Edit::WhitelistProcess(exe)
            };
            out.push((on(format!("Whitelist {name}")), edit));
        }
        if let Some((program, parent, label)) =
            c.process.as_ref().and_then(crate::started_by::offer)
        {
            let host = remote_host.then(|| seen.host.clone());
            out.push((
                on(label),
                Edit::WhitelistStartedBy {
                    host,
                    program,
                    parent,
                },
            ));
        }
        let ip = c.remote_ip.to_string();
        let edit = if remote_host {
            Edit::WhitelistRemoteOn {
                host: seen.host.clone(),
                remote: ip.clone(),
            }
        } else {
            Edit::WhitelistRemote(ip.clone())
        };
        out.push((on(format!("Whitelist {ip}")), edit));
        if let Some(h) = c.host.as_deref().filter(|h| {
            c.host_source.is_some_and(|s| s.may_whitelist())
                && h.parse::<conntrack_tray_helper::config::HostPattern>()
                    .is_ok()
        }) {
            out.push((
                format!("Whitelist {}", crate::text::host(h)),
                Edit::WhitelistHost(h.to_string()),
            ));
        }
        out
    }

    pub(super) fn rules_ui(&mut self, ui: &mut egui::Ui) {
        ui.label(
            "A connection a rule matches is not reported. Mutes (\"Mute 1 h\") are kept by the applet and end by themselves.",
        );
        ui.separator();
        self.mutes_ui(ui);
        if self.rules.is_empty() {
            ui.label("Nothing is whitelisted.");
            return;
        }
        let mut removed = None;
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for (i, r) in self.rules.iter().enumerate() {
                    ui.horizontal(|ui| {
                        if ui.button("Remove").clicked() {
                            removed = Some(i);
                        }
                        ui.label(RichText::new(r.label()).strong());
                    });
                    ui.label(RichText::new(r.proves()).weak());
                    ui.add_space(4.0);
                }
            });
        if let Some(r) = removed.and_then(|i| self.rules.get(i).cloned()) {
            self.remove(&r);
        }
    }
}

/// A time as the list shows it: `2026-11-25 10:00:00` (UTC, as kept).
fn when(ts: &str) -> String {
    let short = ts.get(..19).unwrap_or(ts).replacen('T', " ", 1);
    crate::text::line(&short)
}

impl Window {
    /// The applet's mutes, asked for at most every two seconds while they are shown, each
    /// with *Unmute*.
    fn mutes_ui(&mut self, ui: &mut egui::Ui) {
        let due = self
            .mutes_asked
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(2));
        if let (Some(bus), true) = (&self.bus, due) {
            self.mutes_asked = Some(std::time::Instant::now());
            self.mutes = bus
                .call_method(
                    Some(crate::instance::BUS_NAME),
                    crate::instance::PATH,
                    Some(crate::instance::INTERFACE),
                    "Mutes",
                    &(),
                )
                .ok()
                .and_then(|r| r.body().deserialize().ok())
                .unwrap_or_default();
        }
        if self.bus.is_some() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(2));
        }
        let now = self
            .now
            .unwrap_or_else(std::time::SystemTime::now)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let live: Vec<(String, String, u64)> = self
            .mutes
            .iter()
            .filter(|(_, _, until)| *until > now)
            .cloned()
            .collect();
        if live.is_empty() {
            ui.label("No program is muted.");
            ui.separator();
            return;
        }
        ui.label(
            RichText::new(
                "Muted (no notification until the time given; still kept in the history)",
            )
            .strong(),
        );
        let mut unmute = None;
        for (host, program, until) in &live {
            ui.horizontal(|ui| {
                if ui.button("Unmute").clicked() {
                    unmute = Some((host.clone(), program.clone()));
                }
                let on = if host.is_empty() {
                    "everywhere".to_string()
                } else {
                    format!("on {}", crate::text::host(host))
                };
                let left = until.saturating_sub(now);
                ui.label(format!(
                    "{} {on}, {} more",
                    crate::text::line(program),
                    crate::text::duration(std::time::Duration::from_secs(left))
                ));
            });
        }
        ui.separator();
        if let Some((host, program)) = unmute {
            if let Some(bus) = &self.bus {
                let asked = bus.call_method(
                    Some(crate::instance::BUS_NAME),
                    crate::instance::PATH,
                    Some(crate::instance::INTERFACE),
                    "Unmute",
                    &(host.as_str(), program.as_str()),
                );
                if let Err(e) = asked {
                    self.said = Some(format!(
                        "cannot reach the applet: {}",
                        crate::text::line(&e.to_string())
                    ));
                }
                self.mutes_asked = None;
            }
            self.mutes.retain(|(h, p, _)| (h, p) != (&host, &program));
            self.unmuted.push((host, program));
        }
    }
}

pub(super) fn program_heading(g: &model::Group, events: u64, destinations: usize) -> String {
    let who = match &g.key.program {
        Some(id) if Some(id) != g.name.as_ref() => {
            format!("{} ({})", g.program(), crate::text::line(id))
        }
        _ => g.program(),
    };
    let s = |n: u64| if n == 1 { "" } else { "s" };
    format!(
        "{who} on {} — {events} connection{}, {destinations} destination{}",
        crate::text::host(&g.key.machine),
        s(events),
        s(destinations as u64)
    )
}

pub(super) fn destination_row(g: &model::Group) -> String {
    let dir = match g.key.direction {
        Direction::Outbound => "out",
        Direction::Inbound => "in",
        Direction::Forward => "routed",
    };
    let times = if g.first == g.last {
        when(&g.last)
    } else {
        format!("{} – {}", when(&g.first), when(&g.last))
    };
    let critical = if g.critical { " · critical port" } else { "" };
    let own = if g.own {
        " · this applet's ssh link"
    } else {
        ""
    };
    format!(
        "{} · {} {dir} · {}× · {times}{critical}{own}",
        g.destination(),
        g.key.proto,
        g.count
    )
}
