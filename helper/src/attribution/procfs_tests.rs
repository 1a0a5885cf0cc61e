use super::*;

#[test]
fn cmdline_splits_on_nul_and_drops_the_final_empty_piece() {
    assert_eq!(
        split_cmdline(b"curl\0https://x\0"),
        vec!["curl", "https://x"]
    );
    assert_eq!(split_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
    assert!(split_cmdline(b"").is_empty());
}

#[test]
fn a_record_s_path_is_verified_only_as_the_file_that_ran() {
    use std::os::unix::fs::MetadataExt;
    let idx = ProcIndex::new();
    let me = std::fs::canonicalize("/proc/self/exe").expect("exe");
    let m = std::fs::metadata(&me).expect("stat");
    let own_mnt = idx.own_mnt.unwrap_or(0) as u32;
    let record = |path: &str, file| ExecRecord {
        path: Some(path.into()),
        file,
        mnt_ns: own_mnt,
        ..Default::default()
    };
    let me = me.to_str().expect("utf-8");
    assert_eq!(idx.record_verdict(&record(me, (m.dev(), m.ino()))), Ok(()));
    // Another file at the path (replaced, or a bind mount elsewhere), a descriptor's path
    // (the helper's own descriptor here), a relative path: never verified.
    assert!(idx
        .record_verdict(&record(me, (m.dev(), m.ino() + 1)))
        .is_err());
    assert!(idx
        .record_verdict(&record("/dev/fd/0", (m.dev(), m.ino())))
        .is_err());
    assert!(idx
        .record_verdict(&record("/proc/self/exe", (m.dev(), m.ino())))
        .is_err());
    let relative = ExecRecord {
        path: None,
        ..record(me, (m.dev(), m.ino()))
    };
    assert!(idx.record_verdict(&relative).is_err());
}

#[test]
fn cmdline_replaces_invalid_utf8() {
    assert_eq!(split_cmdline(b"ev\xffil\0"), vec!["ev\u{fffd}il"]);
}

#[test]
fn cmdline_is_cut_at_the_limit_and_marked() {
    let big = vec![b'x'; 1 << 20];
    let args = split_cmdline(&big);
    assert_eq!(args.len(), 2);
    assert_eq!(args[0].len(), CMDLINE_LIMIT);
    assert_eq!(args[1], "…");
}

#[test]
fn a_refused_connect_is_found_through_the_socket_it_left_open() {
    use rustix::net::{connect, socket, AddressFamily, SocketType};
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(connect(&fd, &target).is_err(), "nobody listens there");
    let local = SocketAddr::try_from(rustix::net::getsockname(&fd).expect("name")).expect("inet");
    assert!(is_closed_tcp_at(&fd, local));
    assert!(!is_closed_tcp_at(
        &fd,
        SocketAddr::new(local.ip(), local.port().wrapping_add(1))
    ));
    // A live listener is not a closed socket.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let lfd: std::os::fd::OwnedFd = l.try_clone().expect("clone").into();
    assert!(!is_closed_tcp_at(&lfd, l.local_addr().expect("addr")));

    let mut idx = ProcIndex::new();
    let me = idx.by_closed_tcp(local).expect("found through pidfd_getfd");
    assert_eq!(me.pid, std::process::id());
    drop(fd);
}

#[test]
fn finds_its_own_socket_and_describes_itself() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    // A socket's inode is what fstat reports for it.
    let inode = rustix::fs::fstat(&sock).expect("fstat").st_ino;
    let mut idx = ProcIndex::new();
    let uid = owner_uid(std::path::Path::new("/proc/self")).expect("uid");
    let p = idx.by_inode(inode, uid).expect("found");
    assert_eq!(p.pid, std::process::id());
    // A dup is the same process twice over, not two holders.
    let dup = sock.try_clone().expect("dup");
    let held = idx.holders(inode, uid);
    assert_eq!(held.processes, vec![p.clone()]);
    assert_eq!(held.more, 0);
    drop((sock, dup));
    // A socket nobody holds is a miss, not a guess.
    assert_eq!(idx.by_inode(u64::MAX - 1, uid), None);
    assert_eq!((idx.stats.found, idx.stats.misses), (2, 1));
}

#[test]
fn the_reader_limits_make_a_small_budget_that_stops_at_the_first_holder() {
    let mut idx = ProcIndex::new();
    assert!(idx.limits().all);
    idx.set_scan_limit(Some(64));
    let l = idx.limits();
    assert_eq!((l.budget, l.pids, l.fast), (640, Some(64), true));
    assert!(l.budget / Budget::READ < 10_000);
}

/// Exec records by pid, for the tests.
struct Recorded(Vec<ExecRecord>);

impl Execs for Recorded {
    fn exec_record(&mut self, pid: u32) -> std::io::Result<Option<ExecRecord>> {
        Ok(self.0.iter().find(|r| r.pid == pid).cloned())
    }
}

/// Process 4242 described as a socket's holder is.
fn described(idx: &mut ProcIndex) -> Process {
    let stat = idx.stat(4242).expect("stat");
    let (start, ppid) = (stat.starttime, stat.ppid);
    let p = idx.describe(stat).expect("described");
    idx.exiting_by_record(p, start, ppid)
}

#[test]
fn a_holder_that_is_exiting_is_described_by_its_exec_record() {
    // A process in the middle of exiting: `/proc/PID` is there with its stat, but no exe
    // link and an empty command line (its memory is gone, its sockets not yet).
    let root = tempfile::tempdir().expect("tmp");
    let own = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let after_comm = own.rsplit_once(") ").expect("stat").1;
    let fields: Vec<&str> = after_comm.split(' ').collect();
    // starttime is the 22nd field of stat, the 20th after pid and comm.
    let start_ticks: u64 = fields[19].parse().expect("starttime");
    let ppid: u32 = fields[1].parse().expect("ppid");
    std::fs::create_dir(root.path().join("4242")).expect("mkdir");
    std::fs::write(
        root.path().join("4242/stat"),
        format!("4242 (bash) {after_comm}"),
    )
    .expect("stat");
    std::fs::write(root.path().join("4242/cmdline"), b"").expect("cmdline");
    let mut idx = ProcIndex::new();
    idx.root = root.path().to_path_buf();
    let record = ExecRecord {
        pid: 4242,
        start_ns: start_ticks * idx.tick_ns + 3,
        path: Some("/usr/bin/bash".into()),
        args: vec![
            "bash".into(),
            "-c".into(),
            "echo x > /dev/tcp/10.0.0.1/80".into(),
        ],
        comm: "bash".into(),
        ppid,
        ..Default::default()
    };
    // Other processes' records under the pid: one started a tick later; one in the same
    // tick with another name (this one was forked, not exec'd, after it had the pid); one
    // with another parent. None is used.
    let others = [
        ExecRecord {
            start_ns: (start_ticks + 1) * idx.tick_ns,
            ..record.clone()
        },
        ExecRecord {
            comm: "python3".into(),
            ..record.clone()
        },
        ExecRecord {
            ppid: ppid + 1,
            ..record.clone()
        },
    ];
    let mut idx = idx;
    for other in others {
        idx.cache.clear();
        idx = idx.with_execs(Box::new(Recorded(vec![other])));
        let p = described(&mut idx);
        assert_eq!(p.exe, None);
        assert!(p.cmdline.is_empty());
    }
    idx.cache.clear();
    let mut idx = idx.with_execs(Box::new(Recorded(vec![record])));
    let p = described(&mut idx);
    assert_eq!(p.exe.as_deref(), Some("/usr/bin/bash"));
    assert_eq!(p.cmdline, ["bash", "-c", "echo x > /dev/tcp/10.0.0.1/80"]);
    assert!(p.exited);
    // Not verified: the record's file id does not match /usr/bin/bash here.
    assert!(!p.exe_verified);
}

/// Exec records none, fork records by pid, for the tests.
struct Forked(Vec<crate::attribution::fork_hook::ForkRecord>);

impl Execs for Forked {
    fn exec_record(&mut self, _pid: u32) -> std::io::Result<Option<ExecRecord>> {
        Ok(None)
    }
    fn fork_record(
        &mut self,
        pid: u32,
    ) -> std::io::Result<Option<crate::attribution::fork_hook::ForkRecord>> {
        Ok(self.0.iter().find(|r| r.pid == pid).copied())
    }
}

#[test]
fn a_parent_is_said_to_have_forked_only_with_a_fork_record_naming_it_and_its_file() {
    use crate::attribution::fork_hook::ForkRecord;
    let me = std::process::id();
    let mut idx = ProcIndex::new();
    let stat = idx.stat(me as i32).expect("own stat");
    let ppid = u32::try_from(stat.ppid).expect("ppid");
    let parent = idx.stat(stat.ppid).expect("parent's stat");
    let parent_exe = std::fs::read_link(format!("/proc/{ppid}/exe")).expect("parent's exe");
    let m = std::fs::metadata(&parent_exe).expect("parent's file");
    let tick = idx.tick_ns;
    let right = ForkRecord {
        pid: me,
        start_ns: stat.starttime * tick + 5,
        by: ppid,
        by_start_ns: parent.starttime * tick + 1,
        by_file: (m.dev(), m.ino()),
        inherited: false,
    };
    let mut forked = |r: ForkRecord| {
        let mut i = std::mem::take(&mut idx).with_execs(Box::new(Forked(vec![r])));
        i.cache.clear();
        i.parents.clear();
        let p = i
            .describe(i.stat(me as i32).expect("stat"))
            .expect("described");
        idx = i;
        assert_eq!(p.ancestors.first().map(|a| a.pid), Some(ppid));
        p.parent_forked
    };
    assert!(
        forked(right),
        "the record names the parent and the file it runs"
    );
    let wrong = [
        ForkRecord {
            by: ppid + 1,
            ..right
        },
        ForkRecord {
            by_start_ns: (parent.starttime + 1) * tick,
            ..right
        },
        ForkRecord {
            start_ns: (stat.starttime + 1) * tick,
            ..right
        },
        ForkRecord {
            by_file: (m.dev(), m.ino() + 1),
            ..right
        },
        ForkRecord {
            by_file: (0, 0),
            ..right
        },
        ForkRecord {
            inherited: true,
            ..right
        },
    ];
    for r in wrong {
        assert!(!forked(r), "{r:?}");
    }
}

/// An image entry for one pid, and since when entries are made, for the tests.
struct Imaged(Option<crate::attribution::fork_hook::Image>, Option<u64>);

impl Execs for Imaged {
    fn exec_record(&mut self, _pid: u32) -> std::io::Result<Option<ExecRecord>> {
        Ok(None)
    }
    fn images_since(&self) -> Option<u64> {
        self.1
    }
    fn image(
        &mut self,
        _pid: u32,
    ) -> std::io::Result<Option<crate::attribution::fork_hook::Image>> {
        Ok(self.0)
    }
}

/// This test process, as the image tests see it: its pid, its executable's (device,
/// inode), its stat, a start time in nanoseconds within its start tick, and the tick.
struct Own {
    me: u32,
    file: crate::attribution::exe::FileId,
    stat: Stat,
    start_ns: u64,
    tick: u64,
}

fn own() -> Own {
    let me = std::process::id();
    let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
    let m = std::fs::metadata(&exe).expect("own file");
    let idx = ProcIndex::new();
    let stat = idx.stat(me as i32).expect("own stat");
    Own {
        me,
        file: (m.dev(), m.ino()),
        start_ns: stat.starttime * idx.tick_ns + 7,
        tick: idx.tick_ns,
        stat,
    }
}

#[test]
fn an_executable_is_verified_only_as_far_as_its_image_agrees() {
    use crate::attribution::fork_hook::Image;
    let Own {
        me,
        file: this,
        start_ns,
        tick,
        ..
    } = own();
    let described_since = |image: Option<Image>, since: Option<u64>| {
        let mut i = ProcIndex::new().with_execs(Box::new(Imaged(image, since)));
        i.describe(i.stat(me as i32).expect("stat"))
            .expect("described")
    };
    // Entries made since long before this process started.
    let described = |image: Option<Image>| described_since(image, Some(0));
    let image = |file, inherited| {
        Some(Image {
            start_ns,
            file,
            inherited,
            origin_ns: 0,
            exec_ns: 0,
        })
    };
    let other = (this.0, this.1 + 1);
    // No entry though it started after entries began: lost (a full table), not believed;
    // nor one inherited from a forker that started after them.
    let lost = |p: Process| {
        !p.exe_verified
            && p.exe_unverified
                .as_deref()
                .is_some_and(|w| w.contains("started after the helper"))
    };
    assert!(lost(described(None)));
    let late_forker = Some(Image {
        origin_ns: start_ns.saturating_sub(tick),
        ..image(this, true).expect("image")
    });
    assert!(lost(described_since(late_forker, Some(tick))));
    // No entry for a process older than the entries, or one inherited from a forker older
    // than them: this process is in the machine's user namespace, believed as /proc says.
    let later = Some(start_ns + 10 * tick);
    assert!(described_since(None, later).exe_verified);
    assert!(described_since(None, None).exe_verified);
    assert!(described_since(image(this, true), Some(tick)).exe_verified);
    // Its image is this very file.
    assert!(described(image(this, false)).exe_verified);
    // An entry of an earlier process with the pid says nothing.
    let earlier = Some(Image {
        start_ns: start_ns.saturating_sub(10 * tick),
        file: other,
        inherited: false,
        origin_ns: 0,
        exec_ns: 0,
    });
    assert!(described_since(earlier, later).exe_verified);
    // Its image is another file: what /proc shows was set since (PR_SET_MM_MAP).
    for inherited in [false, true] {
        let p = described(image(other, inherited));
        assert!(!p.exe_verified && !p.exe_system);
        assert!(
            p.exe_unverified
                .as_deref()
                .is_some_and(|w| w.contains("PR_SET_MM_MAP")),
            "{p:?}"
        );
    }
}

#[test]
fn a_connect_record_does_not_name_what_its_process_exec_d_since() {
    use crate::attribution::fork_hook::Image;
    use crate::attribution::Processes;
    let Own {
        me,
        file: this,
        stat,
        start_ns,
        ..
    } = own();
    let exec_ns = start_ns + 1_000;
    let image = Some(Image {
        start_ns,
        file: this,
        inherited: false,
        origin_ns: 0,
        exec_ns,
    });
    let mut i = ProcIndex::new().with_execs(Box::new(Imaged(image, Some(0))));
    let connected_at = |at_boot_ns| Connector {
        pid: me,
        uid: 0,
        comm: stat.comm.clone(),
        at_boot_ns,
        start_ns,
        by_write: false,
    };
    // Connected after its last exec: this very program.
    let after = i.by_pid(&connected_at(exec_ns + 5)).expect("named");
    assert!(after.exe_verified, "{after:?}");
    // Connected before it (the same process, read while it is named and cached, and again):
    // what it runs now is not what connected.
    for _ in 0..2 {
        let before = i.by_pid(&connected_at(exec_ns - 5)).expect("named");
        assert!(!before.exe_verified, "{before:?}");
        assert_eq!(before.exe_unverified.as_deref(), Some(image::EXECED_SINCE));
    }
}
