//! conntrack-tray-helper: wiring only. CLI, threads and channels; the logic lives in the
//! library.
//!
//! Threads: the netlink reader (recv + parse into a bounded queue, nothing else, so slow
//! attribution never lets the kernel's buffer overflow), stdin commands, signals and address
//! changes each feed one channel; the main thread runs the library's main loop
//! ([`conntrack_tray_helper::service`]) over them.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use crossbeam_channel::{bounded, unbounded};

use conntrack_tray_helper::attribution::connect_hook::{kernel_btf, ConnectLog};
use conntrack_tray_helper::attribution::exec_hook::ExecLog;
use conntrack_tray_helper::attribution::listeners::Elsewhere;
use conntrack_tray_helper::attribution::netns::{own_netns, Namespaces};
use conntrack_tray_helper::attribution::procfs::ProcIndex;
use conntrack_tray_helper::attribution::sock_diag::SockDiag;
use conntrack_tray_helper::attribution::Attributor;
use conntrack_tray_helper::attribution::{Connects, SocketAttributor};
use conntrack_tray_helper::config::{Config, ProtoSel};
use conntrack_tray_helper::flow::Proto;
use conntrack_tray_helper::names::capture::{DnsCapture, Shared};
use conntrack_tray_helper::names::Names;
use conntrack_tray_helper::output::{self, Format, Output};
use conntrack_tray_helper::pipeline::Pipeline;
use conntrack_tray_helper::service::{self, CommandLine, Inputs, Speaker, Stop};
use conntrack_tray_helper::source::conntrack::{EventSocket, GROUP_NEW};
use conntrack_tray_helper::source::netif;
use conntrack_tray_helper::source::nft::ConntrackTable;
use conntrack_tray_helper::source::queue::flow_queue;
use conntrack_tray_helper::source::reader::{Early, EarlyUpdates};
use conntrack_tray_helper::{privileges, realtime};

mod threads;
use threads::{
    spawn_addr_watch, spawn_reader, spawn_record_drain, spawn_signals, spawn_stdin, tcp_before,
};

const SYSTEM_CONFIG: &str = "/etc/conntrack-tray/config.toml";
/// The largest `--rcvbuf`: four times the default, so no caller can pin more kernel memory.
const MAX_RCVBUF: u64 = 256 << 20;
/// The largest `--queue`: a queued flow takes about 170 bytes, so this bounds the queue at
/// about 22 MiB (and one batch of at most 256 more: see `source::queue`).
const MAX_QUEUE: u64 = 1 << 17;
/// How many of the newest processes the reader's early lookup scans.
const EARLY_SCAN_LIMIT: usize = 64;
/// The stdout pipe's size the helper asks for (see where it is set).
const STDOUT_PIPE_BYTES: i32 = 1 << 20;

/// Watches new network connections and names the program behind each one.
///
/// Reads conntrack events from the kernel, finds the process that owns each flow, filters them
/// with the configuration and prints one line per reported connection. Needs root
/// (CAP_NET_ADMIN for conntrack events, and reading every process's /proc entries).
#[derive(Parser, Debug)]
#[command(name = "conntrack-tray-helper", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Sub>,

    /// Configuration file [default: /etc/conntrack-tray/config.toml when it exists, else the
    /// built-in default].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    show_defaults: bool,

    /// Report flows whose process cannot be found.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    show_unknown: Option<bool>,

    /// Print why each flow was or was not reported, on stderr.
    #[arg(long, value_name = "true|false", action = ArgAction::Set, default_value_t = false)]
    debug: bool,

    /// Also send each report to all logged-in terminals, like wall.
    #[arg(long, value_name = "true|false", action = ArgAction::Set, default_value_t = false)]
    broadcast: bool,

    /// Watch all protocols instead of only TCP.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    proto_all: Option<bool>,

    /// Report only flows on critical ports.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    filter_critical: Option<bool>,

    /// Append every report as a text line to this file.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,

    /// Output format on stdout. In json mode commands are read from stdin and the helper ends
    /// when stdin closes.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Do not add the nftables table that switches conntrack on.
    #[arg(long)]
    no_ensure_conntrack: bool,

    /// Do not load the eBPF connect hook, which names programs that connect and exit at once
    /// (outbound TCP); socket lookups alone then name them only while they live.
    #[arg(long)]
    no_connect_hook: bool,

    /// Do not load the eBPF exec hook, which keeps what each process exec'd (path, command
    /// line, parent), so a program that exited at once is still described, and its parents.
    #[arg(long)]
    no_exec_hook: bool,

    /// Receive buffer of the conntrack socket, in bytes (at most 268435456).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4096..=MAX_RCVBUF))]
    rcvbuf: u64,

    /// Flows held between the socket reader and the pipeline (at most 131072). When it is
    /// full the reader waits and the kernel's socket buffer (--rcvbuf) holds the rest.
    #[arg(long, value_name = "N", default_value_t = 1 << 14,
          value_parser = clap::value_parser!(u64).range(1..=MAX_QUEUE))]
    queue: u64,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Convert a conntrack.sh config (/etc/conntrack_sh.conf) to TOML on stdout.
    ImportLegacy {
        /// The bash config file, or - for stdin.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(refusal) = privileged_surface(&cli, std::env::var_os("PKEXEC_UID").is_some()) {
        eprintln!("conntrack-tray-helper: {refusal}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("conntrack-tray-helper: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Refuses, before anything is opened, what the applet never asks for.
///
/// Through pkexec (`on_behalf`) the helper runs as root for whoever called it, and any process
/// of the person's session can call it, with flags of its choosing, while an authorization is
/// kept. So it accepts only what the applet needs: `--format json` and switches that name no
/// file and send nothing to other users; the person's settings come over stdin. Under sudo,
/// ssh or the systemd unit, root is the administrator's own choice and the file options stay.
/// `import-legacy` needs no privilege at all, so as root it is refused rather than made to
/// quote a file the caller could not read.
fn privileged_surface(cli: &Cli, on_behalf: bool) -> Result<(), String> {
    if let Some(Sub::ImportLegacy { .. }) = &cli.cmd {
        if on_behalf || nix::unistd::Uid::effective().is_root() {
            return Err(
                "import-legacy needs no privilege: run it as your own user (for a \
                        file only root can read: sudo cat FILE | conntrack-tray-helper \
                        import-legacy -)"
                    .into(),
            );
        }
        return Ok(());
    }
    if !on_behalf {
        return Ok(());
    }
    let refused = [
        (cli.config.is_some(), "--config"),
        (cli.log_file.is_some(), "--log-file"),
        (cli.broadcast, "--broadcast"),
        (cli.show_defaults, "--show-defaults"),
        (cli.format != Format::Json, "--format text"),
    ];
    match refused.iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(format!(
            "{flag} is refused when started through pkexec: the applet's helper takes \
             --format json and its settings over stdin (run it with sudo to use {flag})"
        )),
        None => Ok(()),
    }
}

/// Loads the configuration: a named file, the system file, or the built-in default.
///
/// Started through pkexec, the helper runs as root on behalf of a user, so it reads a file
/// only if root owns it and nobody else can write it, and its errors quote nothing from the
/// file (`--config /etc/shadow` must not leak a line of it).
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let on_behalf = std::env::var_os("PKEXEC_UID").is_some();
    let path = match path {
        Some(p) => p.to_path_buf(),
        None if Path::new(SYSTEM_CONFIG).exists() => PathBuf::from(SYSTEM_CONFIG),
        None => return Ok(Config::embedded_default()),
    };
    if on_behalf {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{}: not used: under pkexec the configuration file must be owned by root and writable by nobody else",
                path.display()
            ));
        }
    }
    Config::from_file(&path).map_err(|e| {
        if on_behalf {
            e.redacted()
        } else {
            e.to_string()
        }
    })
}

fn apply_flags(cfg: &mut Config, cli: &Cli) {
    if let Some(v) = cli.show_unknown {
        cfg.filter.show_unknown = v;
    }
    if let Some(v) = cli.filter_critical {
        cfg.filter.critical_only = v;
    }
    match cli.proto_all {
        Some(true) => cfg.monitor.protocols = vec![ProtoSel::All],
        Some(false) => cfg.monitor.protocols = vec![ProtoSel::One(Proto::Tcp)],
        None => {}
    }
    if cli.no_ensure_conntrack {
        cfg.monitor.ensure_conntrack = false;
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Sub::ImportLegacy { path }) = &cli.cmd {
        let src = if path.as_os_str() == "-" {
            io::read_to_string(io::stdin()).context("cannot read stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?
        };
        match conntrack_tray_helper::legacy::import(&src, &path.display().to_string()) {
            Ok(toml) => {
                print!("{toml}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                eprintln!("conntrack-tray-helper: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let mut cfg = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conntrack-tray-helper: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    apply_flags(&mut cfg, &cli);
    if cli.show_defaults {
        print!("{}", cfg.to_toml());
        return Ok(ExitCode::SUCCESS);
    }

    let log = cli
        .log_file
        .as_deref()
        .map(|p| {
            output::open_log(p).with_context(|| format!("cannot open the log file {}", p.display()))
        })
        .transpose()?;

    // Subscribe before switching conntrack on, so no flow of the first moments is missed.
    // Both fit: clap bounds them far below usize::MAX.
    let rcvbuf = usize::try_from(cli.rcvbuf).unwrap_or(usize::MAX);
    let queue = usize::try_from(cli.queue).unwrap_or(1);
    let socket = EventSocket::open(&[GROUP_NEW], rcvbuf).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            anyhow::anyhow!(
                "cannot subscribe to conntrack events: {e} (run as root, e.g. with sudo or pkexec)"
            )
        } else {
            anyhow::anyhow!("cannot subscribe to conntrack events: {e}")
        }
    })?;
    // Problems met while starting, reported right after the hello line (which comes first).
    let mut startup: Vec<String> = Vec::new();
    // Loading the hook needs CAP_BPF and CAP_PERFMON, which the helper does not keep.
    let btf = match (!cli.no_connect_hook || !cli.no_exec_hook).then(kernel_btf) {
        Some(Ok(btf)) => Some(btf),
        Some(Err(e)) => {
            startup.push(format!(
                "the connect and exec hooks are off; programs that connect and exit at once \
                 may go unnamed: {e}"
            ));
            None
        }
        None => None,
    };
    let hook = match btf.as_ref().filter(|_| !cli.no_connect_hook) {
        None => None,
        Some(btf) => match ConnectLog::open(btf) {
            Ok(h) => {
                // Not an error line: kernels before 6.3 have no tracepoint for it.
                if let (true, Some(why)) = (cli.debug, &h.udp_off) {
                    eprintln!("debug: no UDP connect records: {why}");
                }
                // An error line: the watched code can bring it about (64 programs on the root
                // cgroup's hook), and a datagram's sender is then named by its socket's holder.
                if let Some(why) = &h.send_off {
                    startup.push(format!(
                        "no records of UDP sends to an address, so such a datagram is named by \
                         its socket's holder: {why}"
                    ));
                }
                if let Some(why) = &h.tcp_late {
                    startup.push(format!(
                        "TCP connect records come only once the handshake is over, so a \
                         connection still being set up is named by its socket's holder: {why}"
                    ));
                }
                Some(h)
            }
            Err(e) => {
                startup.push(format!(
                    "the connect hook is off; programs that connect and exit at once may go \
                     unnamed: {e}"
                ));
                None
            }
        },
    };
    let execs = match btf.as_ref().filter(|_| !cli.no_exec_hook) {
        None => None,
        Some(btf) => match ExecLog::open(btf) {
            Ok(e) => {
                if let Some(why) = &e.fork_off {
                    startup.push(format!(
                        "the fork hook is off; whitelist.started_by matches nothing, and a \
                         program that sets the executable /proc shows is not caught: {why}"
                    ));
                }
                Some(e)
            }
            Err(e) => {
                startup.push(format!(
                    "the exec hook is off; programs that exit at once may be reported \
                     without their path and command line: {e}"
                ));
                None
            }
        },
    };
    drop(btf);
    // The kernel's BTF took megabytes of heap to read; give the pages back, or they stay in
    // the helper's resident size for its whole life (the allocator keeps freed memory).
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free heap memory; no allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    let attributor = |connects: Option<Box<dyn Connects + Send>>| -> anyhow::Result<_> {
        let mut procs = ProcIndex::new();
        if let Some(e) = &execs {
            let reader = e.reader().context("cannot share the exec map")?;
            procs = procs.with_execs(Box::new(reader));
        }
        let a = SocketAttributor::new(
            SockDiag::open().context("cannot open the sock_diag socket")?,
            procs,
        );
        Ok(match connects {
            Some(c) => a.with_connects(c),
            None => a,
        })
    };
    // Drained by a thread of its own, started with the others below.
    let ring_records = hook.as_ref().map(|h| h.ring_records());
    let second = match &hook {
        Some(h) => Some(Box::new(h.reader().context("cannot share the connect map")?) as _),
        None => None,
    };
    let third = match &hook {
        Some(h) => Some(Box::new(h.reader().context("cannot share the connect map")?) as _),
        None => None,
    };
    // The DNS capture names the process behind each query with a chain of its own.
    let mut query_attr = attributor(third)?;
    // An inbound flow sent on to a container is asked of the other namespaces by the reader
    // and the pipeline alike: neither may name a host socket that could not receive it.
    // One for both, so a flow the reader could not name is not looked up again.
    let elsewhere = std::sync::Arc::new(std::sync::Mutex::new(Elsewhere::new(Namespaces::new(
        own_netns().unwrap_or(0),
    ))));
    let pipeline_attr =
        attributor(hook.map(|h| Box::new(h) as _))?.with_elsewhere(elsewhere.clone());
    // The reader's lookups run at real-time priority, so they look at the newest processes
    // only; the pipeline's fallback scans them all at normal priority.
    let mut early_attr = attributor(second)?.with_elsewhere(elsewhere);
    early_attr.processes.set_scan_limit(Some(EARLY_SCAN_LIMIT));

    let stdout = io::stdout();
    // A reader that falls behind in a burst keeps the pipe full, and a writer to a full pipe
    // sleeps until a read frees room: with the default 64 KiB pipe that was a sleep and a
    // wakeup every few lines, a quarter of the pipeline thread's CPU in the burst
    // benchmark. With 1 MiB (the unprivileged limit) it waits once per MiB. Not a pipe (a
    // file, a socket under ssh) or over the user's pipe quota: left as it is.
    let _ = nix::fcntl::fcntl(
        &stdout,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(STDOUT_PIPE_BYTES),
    );
    // Lines are flushed whenever no flow is queued, so the buffer's size only counts in a
    // burst: there, 64 KiB is one `write` per 60 lines instead of one per 8.
    let mut out = Output::new(
        cli.format,
        io::BufWriter::with_capacity(64 << 10, stdout.lock()),
        log,
        cli.broadcast,
        hostname(),
    );

    let table = if cfg.monitor.ensure_conntrack {
        match ConntrackTable::add() {
            Ok(t) => {
                startup.extend(t.notes().iter().cloned());
                Some(t)
            }
            Err(e) => {
                startup.push(format!(
                    "could not switch conntrack on; flows may go unseen: {e}"
                ));
                None
            }
        }
    } else {
        None
    };

    let addrs = netif::local_addrs().context("cannot read the interface addresses")?;
    let early = Early::new(cfg.clone(), addrs.clone(), early_attr);

    let (flow_tx, flow_rx) = flow_queue(queue);
    let early_rx = std::sync::Arc::new(EarlyUpdates::default());
    let early_tx = early_rx.clone();
    // The DNS capture needs CAP_NET_RAW, which the helper does not keep: open it first.
    let capture = match DnsCapture::open() {
        Ok(c) => Some(c),
        Err(e) => {
            startup.push(format!(
                "names from DNS are off: cannot capture DNS packets: {e}"
            ));
            None
        }
    };
    // Threads inherit the scheduling policy and the capabilities of the thread that starts
    // them: raise the priority for the reader, then give up what is no longer needed, start
    // the reader, and bring the main thread back to normal priority before the rest.
    // Read once the connect records are being filed (above), so every connection is in it
    // or has a record.
    let before = tcp_before(&mut startup);
    let prio = realtime::raise_reader_priority();
    match privileges::leave_root() {
        Ok(Some(user)) if cli.debug => eprintln!("debug: running as {user} from now on"),
        Ok(_) => {}
        Err(e) => startup.push(format!("still running as root: {e}")),
    }
    if let Err(e) = privileges::restrict(&privileges::needed(cli.broadcast)) {
        startup.push(format!("running with more privileges than needed: {e}"));
    }
    if let Err(e) = conntrack_tray_helper::seccomp::confine(cli.broadcast) {
        startup.push(format!("running without the seccomp filter: {e}"));
    }
    spawn_reader(socket, flow_tx, early, early_rx, (cli.debug, prio), before)?;
    realtime::normal_priority();
    let names = match capture.map(|c| {
        c.spawn(Box::new(move |sides| {
            query_attr.attribute(sides).map(|a| a.process.pid)
        }))
    }) {
        Some(Ok(shared)) => shared,
        Some(Err(e)) => {
            startup.push(format!(
                "names from DNS are off: cannot start the capture: {e}"
            ));
            Shared::without_capture()
        }
        None => Shared::without_capture(),
    };
    let mut pipeline = Pipeline::new(cfg, addrs, pipeline_attr, Names::new(names));
    match conntrack_tray_helper::attribution::exe_hash::ExeHashes::start() {
        Ok(h) => pipeline = pipeline.with_hashes(h),
        Err(e) => startup.push(format!("executables are not hashed: {e}")),
    }
    // Bounded: a caller that floods stdin waits for the helper instead of filling its memory.
    let (cmd_tx, cmd_rx) = bounded::<CommandLine>(16);
    if cli.format == Format::Json {
        spawn_stdin(cmd_tx)?;
    }
    let (sig_tx, sig_rx) = unbounded::<i32>();
    spawn_signals(sig_tx)?;
    let (addr_tx, addr_rx) = unbounded();
    spawn_addr_watch(addr_tx);
    if let Some(r) = ring_records {
        spawn_record_drain(r);
    }
    let inputs = Inputs {
        flows: flow_rx,
        cmds: cmd_rx,
        sigs: sig_rx,
        addrs: addr_rx,
        early: early_tx,
        heartbeat_timeout: conntrack_tray_helper::commands::HEARTBEAT_TIMEOUT,
    };
    let speaker = Speaker {
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: hostname(),
        pid: std::process::id(),
    };
    let stop = service::serve(
        &mut pipeline,
        &mut out,
        &inputs,
        speaker,
        startup,
        cli.debug,
    );
    if cli.debug {
        eprintln!(
            "debug: stopping ({stop}); {:?}; {}",
            pipeline.stats,
            pipeline.tables()
        );
    }
    if let Some(t) = table {
        if let Err(e) = t.remove() {
            eprintln!("conntrack-tray-helper: could not remove the nftables table: {e}");
        }
    }
    Ok(match stop {
        Stop::StdinClosed | Stop::StdoutClosed => ExitCode::SUCCESS,
        Stop::Signal(_) => ExitCode::SUCCESS,
        Stop::Silent => {
            eprintln!("conntrack-tray-helper: {stop}");
            ExitCode::SUCCESS
        }
        Stop::ReaderFailed(e) => {
            eprintln!("conntrack-tray-helper: {e}");
            ExitCode::from(1)
        }
    })
}
