//! Private files: how the applet writes every file it writes (the history and its rotated
//! copy, the settings, the autostart entry).
//!
//! The history holds the command lines of every user's programs, root's too (`curl -H
//! 'X-Api-Key: …'`), and the settings say what the person trusts: none of it is for other
//! users. So every file is created 0600 from the start (the mode goes to open(2); it is
//! never a wider file made narrower later), in directories created 0700. The applet's own
//! directories (`~/.config/conntrack-tray`, `~/.local/state/conntrack-tray`) are tightened to
//! 0700 when they exist wider; directories it does not own (`~/.config`, `~/.config/autostart`,
//! a dotfiles folder a config links into) are created 0700 when missing and otherwise left as
//! they are.
//!
//! A whole file is replaced atomically ([`write_atomically`]): a 0600 temporary file in the
//! same directory, written, fsynced, renamed over the old one, the directory fsynced. A path
//! that is a symbolic link (a config kept in a dotfiles repository) is written through: the
//! link's target is replaced in the target's directory, and the link stays a link.
//! Appended files ([`open_append`]) are never opened through a link.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every file the applet writes.
pub const FILE_MODE: u32 = 0o600;
/// Every directory the applet creates, and its own directories.
pub const DIR_MODE: u32 = 0o700;
/// As many links as the kernel follows in one path.
const MAX_LINKS: usize = 40;

/// The directory a file is in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

/// Creates `dir` and its missing parents, each 0700; existing ones are not touched.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// One of the applet's own directories: created 0700 when missing, tightened to 0700 when it
/// is the user's and lets the group or others in. (A link to a directory counts as the
/// directory: it is where the files go.)
pub fn own_dir(dir: &Path) -> io::Result<()> {
    create_dirs(dir)?;
    tighten_dir(dir)
}

/// Tightens one of the applet's own directories to 0700 if it exists wider (see
/// [`own_dir`]); a missing one stays missing.
pub fn tighten_dir(dir: &Path) -> io::Result<()> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir()
        && meta.mode() & 0o077 != 0
        && meta.uid() == nix::unistd::Uid::effective().as_raw()
    {
        std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes an existing regular file of the applet's 0600 (it may predate this rule); a
/// missing file or a link is left alone.
pub fn tighten(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.mode() & 0o7777 != FILE_MODE => {
            std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The file a write to `path` replaces: `path`, or while it is a symbolic link, the link's
/// target (a relative target is relative to the link's directory). A dangling link names the
/// file to create.
pub fn resolve_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = if to.is_absolute() {
                    to
                } else {
                    parent(&p).join(to)
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never half of
/// one, and the new one is 0600 from its creation: a temporary file beside the target (see
/// [`resolve_links`]), fsynced, renamed over it, the directory fsynced. A missing directory
/// is created 0700 (see [`own_dir`] for the applet's own).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = resolve_links(path)?;
    let dir = parent(&target);
    create_dirs(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".conntrack-tray.")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    // The umask may only have narrowed it; make it exactly 0600.
    tmp.as_file()
        .set_permissions(Permissions::from_mode(FILE_MODE))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// Opens `path` to append to it: created 0600, an existing file made 0600, and never through
/// a link (`O_NOFOLLOW`: a link planted in the applet's directory would send its lines
/// elsewhere). The directory must exist.
pub fn open_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if f.metadata()?.mode() & 0o7777 != FILE_MODE {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").mode() & 0o7777
    }

    #[test]
    fn new_files_and_directories_are_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("a/b/c.toml");
        write_atomically(&file, b"x").expect("write");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(mode(&dir.path().join("a")), DIR_MODE);
        assert_eq!(mode(&dir.path().join("a/b")), DIR_MODE);
        let log = dir.path().join("a/log");
        drop(open_append(&log).expect("append"));
        assert_eq!(mode(&log), FILE_MODE);
    }

    #[test]
    fn an_existing_wide_file_becomes_private_on_replace_and_on_append() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "old").expect("write");
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).expect("chmod");
        write_atomically(&file, b"new").expect("write");
        assert_eq!(mode(&file), FILE_MODE);
        std::fs::set_permissions(&file, Permissions::from_mode(0o666)).expect("chmod");
        drop(open_append(&file).expect("append"));
        assert_eq!(mode(&file), FILE_MODE);
        std::fs::set_permissions(&file, Permissions::from_mode(0o640)).expect("chmod");
        tighten(&file).expect("tighten");
        assert_eq!(mode(&file), FILE_MODE);
        tighten(&dir.path().join("missing")).expect("a missing file is fine");
    }

    #[test]
    fn own_directories_are_tightened_others_only_created() {
        let dir = tempfile::tempdir().expect("tmp");
        let outer = dir.path().join("config");
        let own = outer.join("conntrack-tray");
        std::fs::create_dir_all(&own).expect("mkdir");
        for d in [&outer, &own] {
            std::fs::set_permissions(d, Permissions::from_mode(0o755)).expect("chmod");
        }
        tighten_dir(&outer.join("missing")).expect("a missing one is fine");
        assert!(!outer.join("missing").exists());
        own_dir(&own).expect("own");
        assert_eq!(mode(&own), DIR_MODE);
        assert_eq!(mode(&outer), 0o755, "the parent is not the applet's");
        write_atomically(&outer.join("autostart/x.desktop"), b"x").expect("write");
        assert_eq!(mode(&outer.join("autostart")), DIR_MODE, "created");
        assert_eq!(mode(&outer), 0o755);
    }

    #[test]
    fn a_link_is_written_through_and_stays_a_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let dots = dir.path().join("dotfiles");
        std::fs::create_dir(&dots).expect("mkdir");
        std::fs::write(dots.join("ct.toml"), "old").expect("write");
        let link = dir.path().join("config.toml");
        // Relative, and through a second link.
        std::os::unix::fs::symlink("dotfiles/ct.toml", dir.path().join("hop")).expect("ln");
        std::os::unix::fs::symlink("hop", &link).expect("ln");
        write_atomically(&link, b"new").expect("write");
        assert!(std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(dots.join("ct.toml")).expect("read"),
            "new"
        );
        assert_eq!(mode(&dots.join("ct.toml")), FILE_MODE);
        assert_eq!(
            std::fs::read_dir(&dots).expect("dir").count(),
            1,
            "no temporary file left"
        );
        // A dangling link names the file to create.
        std::os::unix::fs::symlink("dotfiles/new.toml", dir.path().join("d")).expect("ln");
        write_atomically(&dir.path().join("d"), b"x").expect("write");
        assert_eq!(std::fs::read(dots.join("new.toml")).expect("read"), b"x");
        // A loop is an error, not a hang.
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).expect("ln");
        assert!(write_atomically(&dir.path().join("loop"), b"x").is_err());
    }

    #[test]
    fn writes_are_atomic_renames() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "old").expect("write");
        let before = std::fs::metadata(&path).expect("meta").ino();
        write_atomically(&path, b"new").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_ne!(
            std::fs::metadata(&path).expect("meta").ino(),
            before,
            "a new inode: renamed, not rewritten"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn appending_never_follows_a_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let elsewhere = dir.path().join("public.txt");
        std::fs::write(&elsewhere, "").expect("write");
        let log = dir.path().join("events.jsonl");
        std::os::unix::fs::symlink(&elsewhere, &log).expect("ln");
        assert!(open_append(&log).is_err());
        assert_eq!(std::fs::read(&elsewhere).expect("read"), b"");
    }
}
