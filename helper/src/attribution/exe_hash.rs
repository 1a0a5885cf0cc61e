//! The SHA-256 of the file a process runs, hashed off the hot path and cached by version.
//!
//! Hashing a binary takes milliseconds (a 300 KB `curl` ~1 ms, a 200 MB browser a few
//! hundred), far more than a flow may cost, so the pipeline only looks the hash up and queues
//! unknown versions for the `exe-hash` thread: the first flows of a new binary go out without
//! `exe_sha256`. Only a flow whose silence depends on the hash (a whitelisted program with a
//! pinned hash, `whitelist.pinned`) waits for it, hashed on the spot, once per version.
//!
//! The key is [`FileVersion`]: device and inode (which file), size, mtime and ctime (which
//! contents; `touch -d` sets mtime back, never ctime). What is hashed is the very file that
//! runs: `/proc/PID/exe` opened (the link leads to the running file whatever the path says),
//! or for a process gone by then the file at its reported path, and either only when the
//! opened file's version is the one the process was seen running. The version is read again
//! after the last byte: a file written to while it was read is not given a hash.
//!
//! Bounded: files larger than [`SIZE_LIMIT`] are not hashed (a hostile program can be a
//! 4 GiB file of zeroes; the event says so in `exe_sha256_missing`), [`CACHE_LIMIT`]
//! versions are remembered (least recently used forgotten), [`QUEUE`] requests wait.

use std::collections::HashSet;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::event::{FileVersion, Process};

/// Larger executables are not hashed (the largest ordinary ones, browsers and IDEs, stay
/// below 300 MB).
pub const SIZE_LIMIT: u64 = 512 * 1024 * 1024;
pub const CACHE_LIMIT: usize = 4096;
pub const QUEUE: usize = 256;

/// What hashing a version gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hashed {
    /// Lowercase hex.
    Sha256(String),
    /// Not hashed, and never will be (this version): why.
    Missing(String),
}

/// Where to find the file of a process seen running `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub version: FileVersion,
    /// `/proc/PID` of the process.
    pub proc_dir: PathBuf,
    /// Its reported path, for when it is gone.
    pub path: Option<String>,
}

impl Job {
    pub fn of(p: &Process) -> Option<Job> {
        Some(Job {
            version: p.exe_file?,
            proc_dir: PathBuf::from(format!("/proc/{}", p.pid)),
            path: p.exe.clone(),
        })
    }
}

/// Why a version was not hashed this time (it may be next time).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Retry {
    /// No file of that version could be opened.
    Gone,
}

/// Hashes `file` if it is `version` before and after, at most `limit` bytes.
fn hash_file(mut file: std::fs::File, version: &FileVersion, limit: u64) -> Result<Hashed, Retry> {
    let now = |f: &std::fs::File| f.metadata().ok().map(|m| super::exe::version(&m));
    if now(&file).as_ref() != Some(version) {
        return Err(Retry::Gone);
    }
    if version.size > limit {
        return Ok(Hashed::Missing(format!(
            "larger than {} MiB ({} bytes): not hashed",
            limit >> 20,
            version.size
        )));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                read += n as u64;
                if read > limit {
                    return Ok(Hashed::Missing("grew past the limit while read".into()));
                }
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Ok(Hashed::Missing(format!("cannot be read: {e}"))),
        }
    }
    // Written to while read (or a size that lied): whatever was read is no version's hash,
    // and that version is never hashed again (a file kept changing would be read again and
    // again, up to the limit each time, for every flow that waits for it).
    if now(&file).as_ref() != Some(version) || read != version.size {
        return Ok(Hashed::Missing(
            "changed while it was read: not hashed".into(),
        ));
    }
    Ok(Hashed::Sha256(hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Hashes the file `job` describes: the running file, else the file at its path.
pub fn hash(job: &Job, limit: u64) -> Option<Hashed> {
    let candidates = [
        Some(job.proc_dir.join("exe")),
        job.path.as_deref().map(PathBuf::from),
    ];
    for path in candidates.into_iter().flatten() {
        if let Ok(f) = open(&path) {
            if let Ok(h) = hash_file(f, &job.version, limit) {
                return Some(h);
            }
        }
    }
    None
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never block on a FIFO a hostile path might name.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

struct State {
    done: LruCache<FileVersion, Hashed>,
    pending: HashSet<FileVersion>,
    /// Requests dropped because the queue was full.
    dropped: u64,
}

/// The cache and the thread that fills it; cheap to clone (one shared cache).
#[derive(Clone)]
pub struct ExeHashes {
    state: Arc<Mutex<State>>,
    jobs: Option<Sender<Job>>,
    limit: u64,
}

impl ExeHashes {
    /// A cache with no thread: [`ExeHashes::request`] only queues (for tests, which then run
    /// [`ExeHashes::work`] by hand or use [`ExeHashes::now`]).
    pub fn new(limit: u64) -> (ExeHashes, Receiver<Job>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let cap = NonZeroUsize::new(CACHE_LIMIT).unwrap_or(NonZeroUsize::MIN);
        let hashes = ExeHashes {
            state: Arc::new(Mutex::new(State {
                done: LruCache::new(cap),
                pending: HashSet::new(),
                dropped: 0,
            })),
            jobs: Some(tx),
            limit,
        };
        (hashes, rx)
    }

    /// The helper's: with the `exe-hash` thread.
    pub fn start() -> std::io::Result<ExeHashes> {
        let (hashes, rx) = ExeHashes::new(SIZE_LIMIT);
        let worker = hashes.clone();
        std::thread::Builder::new()
            .name("exe-hash".into())
            .spawn(move || {
                for job in rx {
                    worker.work(&job);
                }
            })?;
        Ok(hashes)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock left a cache of finished hashes: still good.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hash of `version`, when known.
    pub fn known(&self, version: &FileVersion) -> Option<Hashed> {
        self.state().done.get(version).cloned()
    }

    /// Asks the thread to hash `job`'s file, once per version however often asked.
    pub fn request(&self, job: Job) {
        let Some(tx) = &self.jobs else { return };
        let mut st = self.state();
        if st.done.contains(&job.version) || !st.pending.insert(job.version) {
            return;
        }
        let version = job.version;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(job) {
            st.pending.remove(&version);
            st.dropped += 1;
        }
    }

    /// Hashes one queued job and files the answer.
    pub fn work(&self, job: &Job) {
        let h = hash(job, self.limit);
        let mut st = self.state();
        st.pending.remove(&job.version);
        if let Some(h) = h {
            st.done.put(job.version, h);
        }
    }

    /// The hash of `job`'s file now: from the cache, else hashed on this thread.
    pub fn now(&self, job: &Job) -> Option<Hashed> {
        if let Some(h) = self.known(&job.version) {
            return Some(h);
        }
        let h = hash(job, self.limit)?;
        self.state().done.put(job.version, h.clone());
        Some(h)
    }

    /// Requests dropped on a full queue (asked again with the next flow).
    pub fn dropped(&self) -> u64 {
        self.state().dropped
    }

    /// Fills `p.exe_sha256` (or `exe_sha256_missing`): from the cache, else hashed now when
    /// `wait` (a verdict depends on it), else queued for the thread.
    pub fn fill(&self, p: &mut Process, wait: bool) {
        if p.exe_sha256.is_some() || p.exe_sha256_missing.is_some() {
            return;
        }
        let Some(job) = Job::of(p) else { return };
        let h = match self.known(&job.version) {
            Some(h) => Some(h),
            None if wait => self.now(&job),
            None => {
                self.request(job);
                None
            }
        };
        match h {
            Some(Hashed::Sha256(s)) => p.exe_sha256 = Some(s),
            Some(Hashed::Missing(why)) => p.exe_sha256_missing = Some(why),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version_of(path: &Path) -> FileVersion {
        super::super::exe::version(&std::fs::metadata(path).expect("meta"))
    }

    fn job(path: &Path) -> Job {
        Job {
            version: version_of(path),
            proc_dir: PathBuf::from("/nonexistent"),
            path: Some(path.display().to_string()),
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_contents() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("prog");
        std::fs::write(&f, b"abc").expect("write");
        assert_eq!(
            hash(&job(&f), SIZE_LIMIT),
            Some(Hashed::Sha256(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into()
            ))
        );
    }

    #[test]
    fn a_file_of_another_version_is_not_hashed_for_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("prog");
        std::fs::write(&f, b"one").expect("write");
        let old = job(&f);
        // Same size, mtime set back: the ctime still differs.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"two").expect("write");
        let t = std::fs::FileTimes::new().set_modified(
            std::time::UNIX_EPOCH
                + std::time::Duration::new(old.version.mtime.0 as u64, old.version.mtime.1 as u32),
        );
        std::fs::File::options()
            .write(true)
            .open(&f)
            .expect("open")
            .set_times(t)
            .expect("touch");
        let new = job(&f);
        assert_eq!(
            (new.version.size, new.version.mtime),
            (old.version.size, old.version.mtime)
        );
        assert_ne!(new.version, old.version);
        assert_eq!(hash(&old, SIZE_LIMIT), None);
        assert!(matches!(hash(&new, SIZE_LIMIT), Some(Hashed::Sha256(_))));
    }

    #[test]
    fn files_past_the_limit_are_named_not_hashed() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("big");
        std::fs::write(&f, vec![0u8; 4096]).expect("write");
        match hash(&job(&f), 1024) {
            Some(Hashed::Missing(why)) => assert!(why.contains("larger than"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_are_queued_once_per_version_and_filled_by_the_worker() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("prog");
        std::fs::write(&f, b"abc").expect("write");
        let (h, rx) = ExeHashes::new(SIZE_LIMIT);
        let mut p = Process {
            pid: u32::MAX,
            exe: Some(f.display().to_string()),
            exe_file: Some(version_of(&f)),
            ..Default::default()
        };
        for _ in 0..1000 {
            h.fill(&mut p, false);
        }
        assert_eq!(p.exe_sha256, None, "not known yet: not waited for");
        assert_eq!(rx.len(), 1, "one request for a thousand flows");
        let j = rx.try_recv().expect("job");
        h.work(&j);
        h.fill(&mut p, false);
        assert!(p
            .exe_sha256
            .as_deref()
            .is_some_and(|s| s.starts_with("ba7816bf")));
        // Waiting hashes on the spot.
        let g = dir.path().join("other");
        std::fs::write(&g, b"").expect("write");
        let mut q = Process {
            exe: Some(g.display().to_string()),
            exe_file: Some(version_of(&g)),
            ..p.clone()
        };
        q.exe_sha256 = None;
        h.fill(&mut q, true);
        assert!(q
            .exe_sha256
            .as_deref()
            .is_some_and(|s| s.starts_with("e3b0c442")));
        assert_eq!(rx.len(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (h, _rx) = ExeHashes::new(SIZE_LIMIT);
        for i in 0..(QUEUE as u64 + 10) {
            h.request(Job {
                version: FileVersion {
                    ino: i,
                    ..Default::default()
                },
                proc_dir: PathBuf::from("/nonexistent"),
                path: None,
            });
        }
        assert_eq!(h.dropped(), 10);
    }

    #[test]
    fn the_running_test_is_hashed_through_proc() {
        let me = std::fs::metadata("/proc/self/exe").expect("meta");
        let j = Job {
            version: super::super::exe::version(&me),
            proc_dir: PathBuf::from("/proc/self"),
            path: None,
        };
        let t = std::time::Instant::now();
        let h = hash(&j, SIZE_LIMIT);
        eprintln!("hashed {} bytes in {:?}", me.len(), t.elapsed());
        assert!(matches!(h, Some(Hashed::Sha256(_))));
    }
}
