//! Which connections interrupt the person, and in which notification: one live notification
//! per program, updated in place while it is on screen, so a chatty program never buries the
//! one new program that matters. Pure: time comes in as an argument, the text is `text`'s.
//!
//! - A connection that is news (`novelty`, per the `[notify] alert_on` policy) opens its
//!   program's notification, or, while that is on screen, updates it in place.
//! - A program's further connections while its notification is up are counted into it (an
//!   update at most once a [`UPDATE_EVERY`]); they never open a new one.
//! - The global limit (`per_minute` new notifications) is the last defence against many
//!   distinct programs at once: past it, programs share one grouped notification naming the
//!   first few and the count. A new program or destination on a critical port gets its own
//!   past that limit too, up to [`CRITICAL_PER_MINUTE`] a minute: a script spawning a
//!   thousand executables that each connect to port 443 must not bury the screen (and the
//!   notification server) in a thousand critical notifications; past that, they share one
//!   grouped notification of their own, with critical urgency.
//! - Every notification expires ([`EXPIRE`], [`EXPIRE_CRITICAL`] after its last news); the
//!   applet closes it then itself, since some servers never expire critical ones.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::novelty::Novelty;

/// How long a notification stays after its last news.
pub const EXPIRE: Duration = Duration::from_secs(10);
pub const EXPIRE_CRITICAL: Duration = Duration::from_secs(30);
/// At most one in-place update of a notification this often; the rest are folded in.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// Destinations counted per notification (the count stops growing past it).
const DESTINATIONS: usize = 1000;
/// Programs named in a grouped notification's list (the rest are counted).
pub const GROUP_NAMED: usize = 3;
const WINDOW: Duration = Duration::from_secs(60);
/// New notifications a minute for news on critical ports, however many programs.
pub const CRITICAL_PER_MINUTE: usize = 20;
/// Programs remembered as members of a group (its count goes on past it).
const GROUP_MEMBERS: usize = 4096;

/// What one connection does to the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// History and menu only.
    Quiet,
    /// The person muted this program.
    Muted,
    /// Show notification `id` (new, or again in place of itself).
    Show(u64),
    /// Counted into notification `id`, shown with its next update.
    Folded(u64),
}

/// A program's notification while it is on screen.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: u64,
    pub connections: u64,
    destinations: HashSet<String>,
    pub latest: String,
    pub opened: Instant,
    /// A new program or destination on a critical port is in it.
    pub critical: bool,
    expires: Instant,
    sent: Instant,
    pending: bool,
}

impl Live {
    pub fn destinations(&self) -> usize {
        self.destinations.len()
    }
}

/// The notification programs share past the global limit.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: u64,
    /// Program names in the order they came, each once.
    pub names: Vec<String>,
    keys: HashSet<String>,
    pub connections: u64,
    /// Every program in it was new.
    pub all_new: bool,
    /// The group of news on critical ports (critical urgency).
    pub critical: bool,
    /// How many programs joined it (more than `names` holds past [`GROUP_MEMBERS`]).
    pub programs: usize,
    expires: Instant,
    sent: Instant,
    pending: bool,
}

/// A notification the applet has on screen.
pub enum Shown<'a> {
    Program(&'a Live),
    Group(&'a Group),
}

/// One connection as the alerts see it.
pub struct Seen<'a> {
    /// The machine it was seen on (a mute may be for one).
    pub host: &'a str,
    /// The program's key (see `novelty::program_key`).
    pub key: &'a str,
    pub name: &'a str,
    pub destination: &'a str,
    pub novelty: Novelty,
    /// The connection is to a critical port.
    pub critical: bool,
    /// The policy makes this connection news.
    pub news: bool,
}

pub struct Alerts {
    per_minute: usize,
    live: HashMap<String, Live>,
    group: Option<Group>,
    critical_group: Option<Group>,
    /// When each notification of the last minute was opened (the global limit).
    opened: VecDeque<Instant>,
    /// The same for notifications of news on critical ports.
    opened_critical: VecDeque<Instant>,
    /// Muted programs by (the host a mute is for, or every host; the program's key).
    muted: HashMap<(Option<String>, String), Instant>,
    next_id: u64,
}

impl Alerts {
    pub fn new(per_minute: u32) -> Alerts {
        Alerts {
            per_minute: per_minute.max(1) as usize,
            live: HashMap::new(),
            group: None,
            critical_group: None,
            opened: VecDeque::new(),
            opened_critical: VecDeque::new(),
            muted: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn configure(&mut self, per_minute: u32) {
        self.per_minute = per_minute.max(1) as usize;
    }

    /// A fresh notification id (also for notes outside the alerts: details, notices).
    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Mutes program `key` until `until`, on `host` only or (None) everywhere.
    pub fn mute(&mut self, host: Option<&str>, key: &str, until: Instant) {
        self.muted
            .insert((host.map(str::to_string), key.to_string()), until);
    }

    /// The mutes in force at `now`: the host (`None`: every host), the program's key, and
    /// how long each still lasts; soonest over first.
    pub fn mutes(&self, now: Instant) -> Vec<(Option<String>, String, Duration)> {
        let mut m: Vec<_> = self
            .muted
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|((h, k), until)| (h.clone(), k.clone(), until.duration_since(now)))
            .collect();
        m.sort_by_key(|(_, _, left)| *left);
        m
    }

    /// Ends a mute (the window's Rules view); false when there was none.
    pub fn unmute(&mut self, host: Option<&str>, key: &str) -> bool {
        self.muted
            .remove(&(host.map(str::to_string), key.to_string()))
            .is_some()
    }

    /// What `s` does to the screen at `now`.
    pub fn decide(&mut self, s: &Seen, now: Instant) -> Decision {
        self.muted.retain(|_, until| *until > now);
        if self.muted.contains_key(&(None, s.key.to_string()))
            || self
                .muted
                .contains_key(&(Some(s.host.to_string()), s.key.to_string()))
        {
            return Decision::Muted;
        }
        let urgent = s.critical && s.novelty != Novelty::Known;
        if let Some(live) = self.live.get_mut(s.key) {
            live.connections += 1;
            if live.destinations.len() < DESTINATIONS {
                live.destinations.insert(s.destination.to_string());
            }
            // The first critical novelty in it is shown at once (it changes the urgency); the
            // rest at most once a second, however many a program makes.
            let escalates = urgent && s.news && !live.critical;
            if s.news {
                live.latest = s.destination.to_string();
                live.critical |= urgent;
                live.expires = now
                    + if live.critical {
                        EXPIRE_CRITICAL
                    } else {
                        EXPIRE
                    };
            }
            return if escalates || now.saturating_duration_since(live.sent) >= UPDATE_EVERY {
                live.sent = now;
                live.pending = false;
                Decision::Show(live.id)
            } else {
                live.pending = true;
                Decision::Folded(live.id)
            };
        }
        for g in [self.group.as_mut(), self.critical_group.as_mut()]
            .into_iter()
            .flatten()
        {
            if g.keys.contains(s.key) {
                g.connections += 1;
                return fold_group(g, s.news, now);
            }
        }
        if !s.news {
            return Decision::Quiet;
        }
        prune(&mut self.opened, now);
        prune(&mut self.opened_critical, now);
        let room = if urgent {
            self.opened_critical.len() < CRITICAL_PER_MINUTE
        } else {
            self.opened.len() < self.per_minute
        };
        if room {
            if urgent {
                self.opened_critical.push_back(now);
            } else {
                self.opened.push_back(now);
            }
            let id = self.new_id();
            let mut destinations = HashSet::new();
            destinations.insert(s.destination.to_string());
            self.live.insert(
                s.key.to_string(),
                Live {
                    id,
                    connections: 1,
                    destinations,
                    latest: s.destination.to_string(),
                    opened: now,
                    critical: urgent,
                    expires: now + if urgent { EXPIRE_CRITICAL } else { EXPIRE },
                    sent: now,
                    pending: false,
                },
            );
            return Decision::Show(id);
        }
        // Past the limit: into the one grouped notification (of its kind).
        let new_program = s.novelty == Novelty::NewProgram;
        let slot = if urgent {
            &mut self.critical_group
        } else {
            &mut self.group
        };
        match slot.as_mut() {
            Some(g) => {
                g.programs += 1;
                if g.keys.len() < GROUP_MEMBERS {
                    g.keys.insert(s.key.to_string());
                    g.names.push(s.name.to_string());
                }
                g.connections += 1;
                g.all_new &= new_program;
                fold_group(g, true, now)
            }
            None => {
                self.next_id += 1;
                let id = self.next_id;
                *slot = Some(Group {
                    id,
                    names: vec![s.name.to_string()],
                    keys: HashSet::from([s.key.to_string()]),
                    connections: 1,
                    all_new: new_program,
                    critical: urgent,
                    programs: 1,
                    expires: now + if urgent { EXPIRE_CRITICAL } else { EXPIRE },
                    sent: now,
                    pending: false,
                });
                Decision::Show(id)
            }
        }
    }

    /// The notification `id`, if it is on screen.
    pub fn shown(&self, id: u64) -> Option<Shown<'_>> {
        for g in self.group.iter().chain(self.critical_group.iter()) {
            if g.id == id {
                return Some(Shown::Group(g));
            }
        }
        self.live.values().find(|l| l.id == id).map(Shown::Program)
    }

    /// At `now`: the notifications to show again (folded news) and those to close (expired).
    pub fn due(&mut self, now: Instant) -> (Vec<u64>, Vec<u64>) {
        let mut close = Vec::new();
        self.live.retain(|_, l| {
            let keep = l.expires > now;
            if !keep {
                close.push(l.id);
            }
            keep
        });
        for slot in [&mut self.group, &mut self.critical_group] {
            if slot.as_ref().is_some_and(|g| g.expires <= now) {
                close.extend(slot.take().map(|g| g.id));
            }
        }
        let mut show = Vec::new();
        for l in self.live.values_mut() {
            if l.pending && now.saturating_duration_since(l.sent) >= UPDATE_EVERY {
                l.pending = false;
                l.sent = now;
                show.push(l.id);
            }
        }
        for g in self.group.iter_mut().chain(self.critical_group.iter_mut()) {
            if g.pending && now.saturating_duration_since(g.sent) >= UPDATE_EVERY {
                g.pending = false;
                g.sent = now;
                show.push(g.id);
            }
        }
        (show, close)
    }

    /// When [`Alerts::due`] next has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        let lives = self.live.values().flat_map(|l| {
            let update = l.pending.then_some(l.sent + UPDATE_EVERY);
            std::iter::once(l.expires).chain(update)
        });
        let group = self
            .group
            .iter()
            .chain(self.critical_group.iter())
            .flat_map(|g| {
                let update = g.pending.then_some(g.sent + UPDATE_EVERY);
                std::iter::once(g.expires).chain(update)
            });
        lives.chain(group).min()
    }

    /// The server closed notification `id` (the person dismissed it): the program's next
    /// news opens a new one.
    pub fn closed(&mut self, id: u64) {
        self.live.retain(|_, l| l.id != id);
        for slot in [&mut self.group, &mut self.critical_group] {
            if slot.as_ref().is_some_and(|g| g.id == id) {
                *slot = None;
            }
        }
    }

    /// Every notification on screen (to close them when the applet quits).
    pub fn on_screen(&self) -> Vec<u64> {
        self.live
            .values()
            .map(|l| l.id)
            .chain(
                self.group
                    .iter()
                    .chain(self.critical_group.iter())
                    .map(|g| g.id),
            )
            .collect()
    }
}

fn prune(opened: &mut VecDeque<Instant>, now: Instant) {
    while opened
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
    {
        opened.pop_front();
    }
}

fn fold_group(g: &mut Group, news: bool, now: Instant) -> Decision {
    if news {
        g.expires = now + if g.critical { EXPIRE_CRITICAL } else { EXPIRE };
    }
    if now.saturating_duration_since(g.sent) >= UPDATE_EVERY {
        g.sent = now;
        g.pending = false;
        Decision::Show(g.id)
    } else {
        g.pending = true;
        Decision::Folded(g.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(key: &'a str, dest: &'a str, novelty: Novelty, critical: bool) -> Seen<'a> {
        Seen {
            host: "h",
            key,
            name: key,
            destination: dest,
            novelty,
            critical,
            news: novelty != Novelty::Known,
        }
    }

    #[test]
    fn a_program_keeps_one_notification_updated_at_most_once_a_second() {
        let mut a = Alerts::new(5);
        let t0 = Instant::now();
        let Decision::Show(id) = a.decide(&seen("ff", "a:443", Novelty::NewProgram, false), t0)
        else {
            panic!("first shown")
        };
        let mut folded = 0;
        for i in 1..100u64 {
            let d = format!("h{i}:443");
            match a.decide(
                &seen("ff", &d, Novelty::NewDestination, false),
                t0 + Duration::from_millis(i * 5),
            ) {
                Decision::Folded(f) => {
                    assert_eq!(f, id);
                    folded += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(folded, 99);
        let (show, close) = a.due(t0 + Duration::from_millis(1000));
        assert_eq!((show, close), (vec![id], vec![]));
        let Some(Shown::Program(l)) = a.shown(id) else {
            panic!("live")
        };
        assert_eq!((l.connections, l.destinations()), (100, 100));
        assert_eq!(l.latest, "h99:443");
        // Ten seconds after its last news it is closed.
        let (_, close) = a.due(t0 + Duration::from_millis(495) + EXPIRE + Duration::from_millis(1));
        assert_eq!(close, vec![id]);
        assert!(a.next_due().is_none());
    }

    #[test]
    fn a_new_program_mid_burst_gets_its_own_notification_and_repeats_are_quiet() {
        let mut a = Alerts::new(5);
        let t0 = Instant::now();
        let Decision::Show(ff) = a.decide(&seen("ff", "a:443", Novelty::NewProgram, false), t0)
        else {
            panic!()
        };
        for i in 0..500 {
            let d = format!("h{i}:443");
            a.decide(&seen("ff", &d, Novelty::NewDestination, false), t0);
        }
        let d = a.decide(&seen("new", "x:443", Novelty::NewProgram, false), t0);
        assert!(matches!(d, Decision::Show(id) if id != ff), "{d:?}");
        // Once their notifications are gone, known pairs make none.
        a.due(t0 + EXPIRE_CRITICAL + Duration::from_secs(1));
        let later = t0 + Duration::from_secs(120);
        assert_eq!(
            a.decide(&seen("ff", "a:443", Novelty::Known, false), later),
            Decision::Quiet
        );
    }

    #[test]
    fn past_the_limit_programs_share_one_notification_but_critical_ones_do_not() {
        let mut a = Alerts::new(2);
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for i in 0..10 {
            let k = format!("p{i}");
            if let Decision::Show(id) = a.decide(&seen(&k, "x:80", Novelty::NewProgram, false), t0)
            {
                ids.push(id);
            }
        }
        assert_eq!(ids.len(), 3, "two own notifications and the group: {ids:?}");
        let Some(Shown::Group(g)) = a.shown(ids[2]) else {
            panic!("grouped")
        };
        assert_eq!(g.names.len(), 8);
        assert!(g.all_new);
        let d = a.decide(&seen("evil", "x:443", Novelty::NewProgram, true), t0);
        assert!(
            matches!(d, Decision::Show(id) if !ids.contains(&id)),
            "{d:?}"
        );
        let Decision::Show(evil) = d else { panic!() };
        let Some(Shown::Program(l)) = a.shown(evil) else {
            panic!()
        };
        assert!(l.critical);
    }

    #[test]
    fn a_thousand_new_programs_on_a_critical_port_cannot_bury_the_screen() {
        let mut a = Alerts::new(5);
        let t0 = Instant::now();
        let mut ids = HashSet::new();
        for i in 0..1000 {
            let k = format!("/tmp/x/p{i}");
            if let Decision::Show(id) = a.decide(&seen(&k, "x:443", Novelty::NewProgram, true), t0)
            {
                ids.insert(id);
            }
        }
        assert_eq!(
            ids.len(),
            CRITICAL_PER_MINUTE + 1,
            "own ones, then one group"
        );
        let group = ids.iter().max().copied().expect("group");
        let Some(Shown::Group(g)) = a.shown(group) else {
            panic!("the critical group")
        };
        assert!(g.critical && g.all_new);
        assert_eq!(g.programs, 1000 - CRITICAL_PER_MINUTE);
        // Ordinary programs still get their own notifications beside them.
        assert!(matches!(
            a.decide(&seen("calm", "y:80", Novelty::NewProgram, false), t0),
            Decision::Show(id) if !ids.contains(&id)
        ));
    }

    #[test]
    fn a_programs_first_critical_news_is_shown_at_once_and_the_rest_folded() {
        let mut a = Alerts::new(5);
        let t0 = Instant::now();
        let Decision::Show(id) = a.decide(&seen("c", "a:80", Novelty::NewProgram, false), t0)
        else {
            panic!()
        };
        let d = a.decide(&seen("c", "b:443", Novelty::NewDestination, true), t0);
        assert_eq!(d, Decision::Show(id), "escalated at once");
        for i in 0..100 {
            let dest = format!("h{i}:443");
            let d = a.decide(&seen("c", &dest, Novelty::NewDestination, true), t0);
            assert_eq!(d, Decision::Folded(id));
        }
    }

    #[test]
    fn a_dismissed_notification_is_opened_anew_and_muted_programs_never() {
        let mut a = Alerts::new(5);
        let t0 = Instant::now();
        let Decision::Show(id) = a.decide(&seen("c", "a:1", Novelty::NewProgram, false), t0) else {
            panic!()
        };
        a.closed(id);
        let d = a.decide(&seen("c", "b:1", Novelty::NewDestination, false), t0);
        assert!(matches!(d, Decision::Show(n) if n != id));
        a.mute(None, "c", t0 + Duration::from_secs(3600));
        assert_eq!(
            a.decide(&seen("c", "d:1", Novelty::NewDestination, false), t0),
            Decision::Muted
        );
        assert_eq!(a.on_screen().len(), 1);
        // Listed for the window, and ended from there.
        a.mute(Some("nas"), "x", t0 + Duration::from_secs(60));
        let m = a.mutes(t0);
        assert_eq!(
            m.iter()
                .map(|(h, k, _)| (h.as_deref(), k.as_str()))
                .collect::<Vec<_>>(),
            [(Some("nas"), "x"), (None, "c")]
        );
        assert!(
            a.mutes(t0 + Duration::from_secs(61)).len() == 1,
            "an ended mute is gone"
        );
        assert!(a.unmute(None, "c") && !a.unmute(None, "c"));
        assert!(matches!(
            a.decide(&seen("c", "e:1", Novelty::NewDestination, false), t0),
            Decision::Show(_) | Decision::Folded(_)
        ));
    }
}
