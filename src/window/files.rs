//! The kept history as the window reads it: every file (the rotated ones oldest first, then
//! the current one) a line at a time, never whole, then the current file followed with
//! inotify for the events the applet appends while the window is open.
//!
//! Each file read is a *segment*, kept open: a group's details are read back from the line
//! at its offset in that segment (`read_at`), and an open file is still the same file after
//! the applet rotated it away (renamed, or replaced and so unlinked). A rotation is seen as
//! the path naming another inode: the old file is read to its end, then the new one from its
//! start.
//!
//! The reader runs on its own thread and sends [`Batch`]es over a bounded channel, so a
//! history of any length neither blocks the first frame nor piles up in memory faster than
//! the window folds it into its groups.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use rustix::fs::inotify;

use super::model::{Place, Row};
use crate::history;

/// Rows per batch: big enough that a burst costs few wakeups of the window.
const BATCH: usize = 2048;
/// A longer line is no event the applet wrote (its lines are a few KiB at most).
const MAX_LINE: usize = 1 << 20;

/// What the reader found since its last batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Files opened since (their segment numbers are their places in the order sent).
    pub segments: Vec<Arc<File>>,
    pub rows: Vec<Row>,
    /// The files that existed at the start are read to their end.
    pub caught_up: bool,
}

/// The files of the history at `path`, oldest first: `path.N` … `path.1`, then `path`.
pub fn kept_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return vec![path.to_path_buf()];
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name();
            let Some(rest) = n.as_bytes().strip_prefix(name.as_bytes()) else {
                continue;
            };
            let Some(num) = rest
                .strip_prefix(b".")
                .and_then(|r| std::str::from_utf8(r).ok())
                .and_then(|r| r.parse::<u32>().ok())
            else {
                continue;
            };
            rotated.push((num, e.path()));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(path.to_path_buf());
    files
}

/// One open file of the history and how far it is read.
struct Reading {
    file: Arc<File>,
    segment: usize,
    offset: u64,
    inode: u64,
}

impl Reading {
    fn open(path: &Path, segment: usize) -> io::Result<Reading> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Reading {
            file: Arc::new(file),
            segment,
            offset: 0,
            inode,
        })
    }

    /// Reads the complete lines after `offset` into rows; a line still being written (no
    /// newline yet) is read again next time.
    fn read_on(&mut self, mut each: impl FnMut(Row)) -> io::Result<()> {
        let mut f: &File = &self.file;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(64 << 10, f);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                if n >= MAX_LINE {
                    // Too long to be ours: skipped to its end.
                    self.offset += n as u64;
                    continue;
                }
                return Ok(());
            }
            let at = Place {
                segment: self.segment,
                offset: self.offset,
            };
            self.offset += n as u64;
            if let Some(seen) = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| history::parse_line(l.trim_end()))
            {
                each(Row::of(&seen, at));
            }
        }
    }
}

/// The line at `offset` of `file`, without its newline.
pub fn read_line_at(file: &File, offset: u64) -> io::Result<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut at = offset;
    while out.len() < MAX_LINE {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&buf[..end]);
            break;
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends `batch` and starts a new one; false when the window is gone. `live`: the batch was
/// appended since the window caught up (else it is part of the history read at start).
fn flush(tx: &Sender<Batch>, batch: &mut Batch, wake: &dyn Fn(bool), live: bool) -> bool {
    if batch.rows.is_empty() && batch.segments.is_empty() && !batch.caught_up {
        return true;
    }
    let ok = tx.send(std::mem::take(batch)).is_ok();
    wake(live);
    ok
}

/// Reads the history at `path` and then follows it, on a thread of its own, until the
/// receiver goes. `wake` is called after each batch (the window repaints), with whether the
/// batch is new (see [`flush`]).
pub fn follow(
    path: PathBuf,
    tx: Sender<Batch>,
    wake: Box<dyn Fn(bool) + Send>,
) -> io::Result<std::thread::JoinHandle<()>> {
    // Watching before reading: an event appended meanwhile is read either way.
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watching = inotify::add_watch(
        &fd,
        &dir,
        inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::MOVED_FROM,
    )
    .is_ok();
    std::thread::Builder::new()
        .name("history-reader".into())
        .spawn(move || {
            let mut batch = Batch::default();
            let mut segment = 0;
            let mut current: Option<Reading> = None;
            let files = kept_files(&path);
            let last = files.len() - 1;
            for (i, p) in files.iter().enumerate() {
                let Ok(mut r) = Reading::open(p, segment) else {
                    continue;
                };
                segment += 1;
                batch.segments.push(r.file.clone());
                let mut gone = false;
                let _ = r.read_on(|row| {
                    batch.rows.push(row);
                    if batch.rows.len() >= BATCH {
                        gone |= !flush(&tx, &mut batch, &*wake, false);
                    }
                });
                if gone {
                    return;
                }
                if i == last {
                    current = Some(r);
                }
            }
            batch.caught_up = true;
            if !flush(&tx, &mut batch, &*wake, false) || !watching {
                return;
            }
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut events = inotify::Reader::new(&fd, &mut buf);
            let name = path.file_name().map(|n| n.as_bytes().to_vec());
            loop {
                let Ok(ev) = events.next() else { return };
                let ours = ev
                    .file_name()
                    .is_some_and(|n| Some(n.to_bytes()) == name.as_deref());
                if !ours {
                    continue;
                }
                let more = |r: &mut Reading, batch: &mut Batch| {
                    let _ = r.read_on(|row| batch.rows.push(row));
                };
                if let Some(r) = current.as_mut() {
                    more(r, &mut batch);
                }
                // Rotated: the old file is read to its end above; now the new one.
                let now = std::fs::metadata(&path).map(|m| m.ino()).ok();
                if now.is_some() && now != current.as_ref().map(|r| r.inode) {
                    if let Ok(mut r) = Reading::open(&path, segment) {
                        segment += 1;
                        batch.segments.push(r.file.clone());
                        more(&mut r, &mut batch);
                        current = Some(r);
                    }
                }
                if !flush(&tx, &mut batch, &*wake, true) {
                    return;
                }
            }
        })
}

/// Reads every kept file at once into `each`, and returns the open segments: for tests and
/// the screenshot, which want the whole history before they look.
#[cfg(test)]
pub fn read_all(path: &Path, mut each: impl FnMut(Row)) -> Vec<Arc<File>> {
    let mut segments = Vec::new();
    for p in kept_files(path) {
        let Ok(mut r) = Reading::open(&p, segments.len()) else {
            continue;
        };
        segments.push(r.file.clone());
        let _ = r.read_on(&mut each);
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::history::Seen;
    use std::io::Write;
    use std::time::Duration;

    fn line(port: u16) -> String {
        let seen = Seen {
            host: "laptop".into(),
            conn: fixtures::connection("9.9.9.9", port),
            own: false,
        };
        serde_json::to_string(&seen).expect("json") + "\n"
    }

    #[test]
    fn rotated_files_are_read_oldest_first_and_lines_read_back_at_their_offset() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        std::fs::write(dir.path().join("events.jsonl.2"), line(1)).expect("write");
        std::fs::write(dir.path().join("events.jsonl.1"), line(2) + &line(3)).expect("write");
        std::fs::write(&path, line(4) + "not json\n" + &line(5)).expect("write");
        std::fs::write(dir.path().join("events.jsonl.x"), line(9)).expect("write");
        let mut rows = Vec::new();
        let segs = read_all(&path, |r| rows.push(r));
        let ports: Vec<_> = rows.iter().map(|r| r.key.port).collect();
        assert_eq!(ports, [1, 2, 3, 4, 5].map(Some));
        assert_eq!(segs.len(), 3);
        let at = rows[4].at;
        let back = read_line_at(&segs[at.segment], at.offset).expect("read");
        assert_eq!(back + "\n", line(5));
    }

    #[test]
    fn the_follower_sends_what_is_appended_and_follows_a_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, line(1)).expect("write");
        let (tx, rx) = crossbeam_channel::bounded(16);
        let _t = follow(path.clone(), tx, Box::new(|_| {})).expect("follow");
        let mut ports = Vec::new();
        let recv_until = |n: usize, ports: &mut Vec<Option<u16>>| {
            while ports.len() < n {
                let b: Batch = rx.recv_timeout(Duration::from_secs(5)).expect("batch");
                ports.extend(b.rows.iter().map(|r| r.key.port));
            }
        };
        recv_until(1, &mut ports);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        // Half a line first: sent only once it is whole.
        let l2 = line(2);
        f.write_all(&l2.as_bytes()[..10]).expect("write");
        f.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(100));
        f.write_all(&l2.as_bytes()[10..]).expect("write");
        recv_until(2, &mut ports);
        // The applet rotates: the old file gets one more line, then a new file starts.
        f.write_all(line(3).as_bytes()).expect("write");
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).expect("rename");
        std::fs::write(&path, line(4)).expect("write");
        recv_until(4, &mut ports);
        assert_eq!(ports, [1, 2, 3, 4].map(Some));
    }
}
