//! The process index held to the kernel's records: exec records, image entries and fork
//! records say what a process ran and who forked it, where `/proc` cannot be believed (a
//! program can set what it shows) or no longer answers (the process has exited).

use super::*;

impl ProcIndex {
    /// The exec record of process `pid` that started at `start`, if one is kept.
    pub(super) fn record(&mut self, pid: u32, start: Start) -> Option<ExecRecord> {
        let r = self.execs.as_mut()?.exec_record(pid).ok()??;
        let same = match start {
            // Two processes can start within one tick: nanoseconds tell them apart.
            Start::Ns(ns) => r.start_ns == ns,
            Start::Ticks(t) => lineage::ticks(r.start_ns, self.tick_ns) == t,
        };
        (r.start_ns != 0 && same).then_some(r)
    }

    /// `facts` (what `/proc/PID/exe` says, `dir` is `/proc/PID`) held to the kernel's image
    /// of process `pid` started at `start`: a program can set what `/proc` shows
    /// ([`image`]), so a verified file stays verified only if its image is that file, or it
    /// has none (or an inherited one) because it, or the forker its entry came from, is older
    /// than the image entries, and it is in the machine's user namespace.
    pub(super) fn held_to_records(
        &mut self,
        dir: &Path,
        pid: u32,
        start: Start,
        facts: exe::ExeFacts,
    ) -> (exe::ExeFacts, u64) {
        let Some(id) = facts.id.filter(|_| facts.verified) else {
            return (facts, 0);
        };
        let entry = self
            .execs
            .as_mut()
            .and_then(|e| e.image(pid).ok().flatten());
        let tick_ns = self.tick_ns;
        let same_start = |ns: u64| match start {
            Start::Ns(want) => ns == want,
            Start::Ticks(t) => lineage::ticks(ns, tick_ns) == t,
        };
        let devices = &mut self.devices;
        let exec_ns = image::exec_ns(entry, same_start);
        let shown = image::shown(entry, same_start, id, |k, seen| devices.same(k, seen));
        // Since when every new process gets an entry: one that started later (or was forked
        // by one that did) and has none has lost it.
        let since = self
            .execs
            .as_ref()
            .and_then(|e| e.images_since())
            .map(|t0| lineage::ticks(t0, tick_ns));
        let after = |ticks: u64| since.is_some_and(|t0| ticks > t0);
        let started = match start {
            Start::Ns(ns) => lineage::ticks(ns, tick_ns),
            Start::Ticks(t) => t,
        };
        // The user namespace is read only where it decides.
        let home = || self.own_user.is_some() && user_ns(dir) == self.own_user;
        let why = match shown {
            Shown::Runs => return (facts, exec_ns),
            Shown::Differs => image::DIFFERS,
            Shown::Inherited(origin) if after(lineage::ticks(origin, tick_ns)) => image::LOST,
            Shown::Unknown if after(started) => image::LOST,
            Shown::Inherited(_) | Shown::Unknown if home() => return (facts, exec_ns),
            Shown::Inherited(_) | Shown::Unknown => image::UNKNOWN,
        };
        let facts = exe::ExeFacts {
            verified: false,
            unverified: Some(why.into()),
            system: false,
            ..facts
        };
        (facts, exec_ns)
    }

    /// Whether a record's path names, in the helper's mount namespace, the file it ran.
    pub(super) fn record_verdict(&self, r: &ExecRecord) -> Result<(), &'static str> {
        let Some(path) = r.path.as_deref() else {
            return Err("the executable's path was relative or could not be read");
        };
        // `fexecve` runs `/dev/fd/N`: here that path is the helper's own descriptor N.
        if path.starts_with("/dev/fd/") || path.starts_with("/proc/") {
            return Err("it ran a file descriptor, not a path");
        }
        let at_path = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let home = self.own_mnt == Some(u64::from(r.mnt_ns));
        exe::verdict((r.file.1 != 0).then_some(r.file), at_path, home)
    }

    /// Who process `pid` (started at `start`, ticks) came from: its exec record's parent
    /// when there is one, else `/proc`'s (`ppid`, whose start is then not known).
    pub(super) fn parent_of(&mut self, pid: u32, start: u64, ppid: i32) -> Option<Parent> {
        if let Some(r) = self.record(pid, Start::Ticks(start)) {
            return Some((r.ppid, Some(r.parent_start_ns)));
        }
        u32::try_from(ppid).ok().map(|p| (p, None))
    }

    /// Whether the first of `ancestors` (named `parent` by its pid and, when known, start)
    /// forked process `pid` that started at `start`, running the file now at its `exe`
    /// path: what [`Process::parent_forked`] says, from the kernel's fork record.
    pub(super) fn parent_forked(
        &mut self,
        pid: u32,
        start: Start,
        ancestors: &[Ancestor],
        parent: Option<Parent>,
    ) -> bool {
        let Some((a, (_, parent_start))) = ancestors.first().zip(parent) else {
            return false;
        };
        let Some(exe) = a.exe.as_deref().filter(|_| a.exe_verified) else {
            return false;
        };
        let Some(f) = self
            .execs
            .as_mut()
            .and_then(|e| e.fork_record(pid).ok().flatten())
        else {
            return false;
        };
        let same_start = |ns: u64, s: Start, tick_ns: u64| match s {
            Start::Ns(want) => ns == want,
            Start::Ticks(t) => lineage::ticks(ns, tick_ns) == t,
        };
        // A fork record that holds its forker's mm->exe_file (the forker had no image) counts
        // only for a forker older than the image entries, as `held_to_records` believes one.
        let since = self.execs.as_ref().and_then(|e| e.images_since());
        let lost = f.inherited && since.is_none_or(|t0| f.by_start_ns >= t0);
        if f.by != a.pid || lost || f.by_file.1 == 0 || f.start_ns == 0 || f.by_start_ns == 0 {
            return false;
        }
        if !same_start(f.start_ns, start, self.tick_ns) {
            return false;
        }
        let by_start = match parent_start {
            Some(ns) => Start::Ns(ns),
            None => match i32::try_from(a.pid).ok().and_then(|p| self.stat(p)) {
                Some(s) => Start::Ticks(s.starttime),
                None => return false,
            },
        };
        same_start(f.by_start_ns, by_start, self.tick_ns)
            && std::fs::metadata(exe)
                .is_ok_and(|m| self.devices.same(f.by_file, (m.dev(), m.ino())))
    }

    /// A socket's holder that is exiting: its memory is released before its files are
    /// closed, so for a moment it holds its sockets with no exe and no command line (a bash
    /// one-shot, found by its socket). What it ran is in its exec record, of this very
    /// process: its pid, its start tick, and (a tick being 10 ms, in which a forked child can
    /// be given a pid just freed: the kernel tests do that) its name and parent too. (The
    /// connect records' path knows the start to the nanosecond and does this itself.)
    pub(super) fn exiting_by_record(&mut self, process: Process, start: u64, ppid: i32) -> Process {
        if process.exe.is_some() || !process.cmdline.is_empty() {
            return process;
        }
        let record = self
            .record(process.pid, Start::Ticks(start))
            .filter(|r| r.comm == process.comm && i64::from(r.ppid) == i64::from(ppid));
        let Some(r) = record else {
            return process;
        };
        let c = Connector {
            pid: process.pid,
            uid: process.uid,
            comm: process.comm.clone(),
            at_boot_ns: 0,
            start_ns: r.start_ns,
            by_write: false,
        };
        let recorded = self.described_by_record(&c, r);
        Process {
            cwd: process.cwd,
            context: process.context,
            ..recorded
        }
    }

    /// The process a connect record names, described by its exec record: it has exited.
    pub(super) fn described_by_record(&mut self, c: &Connector, r: ExecRecord) -> Process {
        let verdict = self.record_verdict(&r);
        let system = verdict.is_ok()
            && r.path
                .as_deref()
                .is_some_and(|p| exe::system_location(Path::new(p)));
        let parent = Some((r.ppid, Some(r.parent_start_ns)));
        let ancestors = self.ancestors(parent);
        let parent_forked = self.parent_forked(c.pid, Start::Ns(c.start_ns), &ancestors, parent);
        // The version of the file that ran, for its hash: the file at the path, when it is
        // the one that ran (same device and inode) and the verdict says so.
        let exe_file = r
            .path
            .as_deref()
            .filter(|_| verdict.is_ok())
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| exe::version(&m))
            .filter(|v| (v.dev, v.ino) == r.file);
        Process {
            pid: c.pid,
            comm: c.comm.clone(),
            exe_file,
            exe: r.path,
            cmdline: r.args,
            uid: c.uid,
            user: self.user(c.uid),
            exe_verified: verdict.is_ok(),
            exe_unverified: verdict.err().map(str::to_string),
            exe_system: system,
            ancestors,
            parent_forked,
            cwd: None,
            exited: true,
            ..Default::default()
        }
    }
}
