//! Unpacking a release artifact (`.tar.gz`, `.tgz`, `.tar`, `.zip`, or a single executable) as
//! untrusted input: every entry of every format goes through one writer that keeps it inside
//! the root, masks its mode, refuses anything but files, directories and contained symlinks,
//! and stops at a size and entry budget.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The bits an unpacked file may keep: no setuid, setgid or sticky bit, nothing group- or
/// world-writable.
const FILE_MODE_MASK: u32 = 0o755;
/// Every directory: traversable by the service user, writable by its owner only.
const DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content, all entries together.
    pub max_bytes: u64,
    /// Entries of any kind.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 2 << 30,
            max_entries: 100_000,
        }
    }
}

/// Why an artifact was not unpacked; none of these is worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("entry `{entry}`: {reason}")]
    Refused { entry: String, reason: String },
    #[error("unpacks to more than {limit} bytes (release.max_unpacked_size)")]
    TooLarge { limit: u64 },
    #[error("holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("not a valid archive: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Unpacks `file` into `root` (created if missing; it should be new and empty), choosing the
/// format by name: `.tar.gz`/`.tgz`, `.tar`, `.zip`; any other name is a single executable.
pub fn unpack(file: &Path, root: &Path, limits: &Limits) -> Result<Unpacked, ArchiveError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    fs::create_dir_all(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))?;
    let mut writer = Writer::new(root, *limits)?;
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let gz = flate2::read::GzDecoder::new(fs::File::open(file)?);
        untar(gz, &mut writer)?;
    } else if name.ends_with(".tar") {
        untar(fs::File::open(file)?, &mut writer)?;
    } else if name.ends_with(".zip") {
        unzip(fs::File::open(file)?, &mut writer)?;
    } else {
        let base = file.file_name().unwrap_or_default();
        writer.file(Path::new(base), 0o755, &mut fs::File::open(file)?)?;
    }
    Ok(writer.done)
}

/// The budget for the decompressed stream itself, headers and padding included, so that a
/// stream of headers without content cannot run on for ever either.
fn stream_budget(limits: &Limits) -> u64 {
    limits
        .max_bytes
        .saturating_add(limits.max_entries.saturating_mul(3 * 512))
        .saturating_add(16 << 20)
}

fn untar(reader: impl Read, writer: &mut Writer) -> Result<(), ArchiveError> {
    use tar::EntryType;
    let budget = stream_budget(&writer.limits);
    let mut archive = tar::Archive::new(Budget::new(reader, budget));
    let entries = archive.entries().map_err(malformed)?;
    for entry in entries {
        let mut entry = entry.map_err(|e| over_budget(e, writer.limits.max_bytes))?;
        let path = entry.path().map_err(malformed)?.into_owned();
        let shown = path.display().to_string();
        let mode = entry.header().mode().map_err(malformed)?;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => writer.file(&path, mode, &mut entry)?,
            EntryType::Directory => writer.dir(&path)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(malformed)?
                    .ok_or_else(|| refused(&shown, "a symlink without a target"))?
                    .into_owned();
                writer.symlink(&path, &target)?;
            }
            // Headers that describe the next entry; tar reads them itself.
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            EntryType::Link => return Err(refused(&shown, "hard links are not accepted")),
            EntryType::Char | EntryType::Block => {
                return Err(refused(&shown, "device files are not accepted"))
            }
            EntryType::Fifo => return Err(refused(&shown, "fifos are not accepted")),
            other => {
                return Err(refused(
                    &shown,
                    &format!("entries of type {other:?} are not accepted"),
                ))
            }
        }
    }
    Ok(())
}

fn unzip(file: fs::File, writer: &mut Writer) -> Result<(), ArchiveError> {
    const S_IFMT: u32 = 0o170000;
    const S_IFREG: u32 = 0o100000;
    const S_IFDIR: u32 = 0o040000;
    const S_IFLNK: u32 = 0o120000;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ArchiveError::Malformed(e.to_string()))?;
    if zip.len() as u64 > writer.limits.max_entries {
        return Err(ArchiveError::TooManyEntries {
            limit: writer.limits.max_entries,
        });
    }
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        let name = entry.name().to_owned();
        let path = PathBuf::from(&name);
        let mode = entry.unix_mode();
        let kind = mode.map(|m| m & S_IFMT).filter(|k| *k != 0);
        match kind {
            _ if entry.is_dir() => writer.dir(&path)?,
            Some(S_IFLNK) => {
                let mut target = String::new();
                (&mut entry)
                    .take(4096)
                    .read_to_string(&mut target)
                    .map_err(|e| refused(&name, &format!("unreadable symlink target: {e}")))?;
                writer.symlink(&path, Path::new(&target))?;
            }
            None | Some(S_IFREG) => writer.file(&path, mode.unwrap_or(0o644), &mut entry)?,
            Some(S_IFDIR) => writer.dir(&path)?,
            Some(_) => {
                return Err(refused(
                    &name,
                    "device files, fifos and sockets are not accepted",
                ))
            }
        }
    }
    Ok(())
}

fn refused(entry: &str, reason: &str) -> ArchiveError {
    ArchiveError::Refused {
        entry: entry.escape_debug().to_string(),
        reason: reason.to_owned(),
    }
}

fn malformed(e: io::Error) -> ArchiveError {
    ArchiveError::Malformed(e.to_string())
}

fn over_budget(e: io::Error, limit: u64) -> ArchiveError {
    if e.kind() == io::ErrorKind::FileTooLarge {
        ArchiveError::TooLarge { limit }
    } else {
        malformed(e)
    }
}

/// Writes entries under `root`, never outside it.
struct Writer {
    root: PathBuf,
    limits: Limits,
    done: Unpacked,
}

impl Writer {
    fn new(root: &Path, limits: Limits) -> io::Result<Self> {
        Ok(Self {
            root: root.canonicalize()?,
            limits,
            done: Unpacked::default(),
        })
    }

    fn count(&mut self) -> Result<(), ArchiveError> {
        self.done.entries += 1;
        if self.done.entries > self.limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The entry's path relative to the root: plain names only (`.` is dropped); absolute
    /// paths and `..` are refused. `None` for the root itself.
    fn relative(path: &Path) -> Result<Option<PathBuf>, ArchiveError> {
        let shown = path.display().to_string();
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(refused(&shown, "`..` would leave the release directory"))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused(&shown, "absolute paths are not accepted"))
                }
            }
        }
        Ok((!out.as_os_str().is_empty()).then_some(out))
    }

    /// Makes every directory of `rel` below the root, one at a time, so that no directory is
    /// ever created through a symlink that leads out of the root.
    fn dirs(&self, rel: &Path, shown: &str) -> Result<PathBuf, ArchiveError> {
        let mut at = self.root.clone();
        for c in rel.components() {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    let real = at
                        .canonicalize()
                        .map_err(|_| refused(shown, "goes through a symlink that leads nowhere"))?;
                    if !real.starts_with(&self.root) || !real.is_dir() {
                        return Err(refused(
                            shown,
                            "goes through a symlink that leads out of the release directory",
                        ));
                    }
                    at = real;
                }
                Ok(_) => return Err(refused(shown, "a path below a file")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at)?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(DIR_MODE))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(at)
    }

    /// The parent made and checked, and whatever non-directory stood at the path removed, so
    /// the new entry never writes through an earlier symlink of the same name.
    fn place(&self, path: &Path) -> Result<Option<PathBuf>, ArchiveError> {
        let shown = path.display().to_string();
        let Some(rel) = Self::relative(path)? else {
            return Ok(None);
        };
        let parent = match rel.parent() {
            Some(p) => self.dirs(p, &shown)?,
            None => self.root.clone(),
        };
        let dest = parent.join(rel.file_name().unwrap_or_default());
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => return Err(refused(&shown, "replaces a directory")),
            Ok(_) => fs::remove_file(&dest)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Some(dest))
    }

    fn dir(&mut self, path: &Path) -> Result<(), ArchiveError> {
        self.count()?;
        if let Some(rel) = Self::relative(path)? {
            self.dirs(&rel, &path.display().to_string())?;
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, mode: u32, content: &mut dyn Read) -> Result<(), ArchiveError> {
        self.count()?;
        let shown = path.display().to_string();
        let dest = self
            .place(path)?
            .ok_or_else(|| refused(&shown, "a file in place of the release directory"))?;
        let perm = (mode & FILE_MODE_MASK) | 0o400;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dest)?;
        let left = self.limits.max_bytes - self.done.bytes;
        let copied = io::copy(&mut content.take(left + 1), &mut out).map_err(|e| {
            if e.kind() == io::ErrorKind::FileTooLarge {
                ArchiveError::TooLarge {
                    limit: self.limits.max_bytes,
                }
            } else {
                ArchiveError::Malformed(format!("entry `{shown}`: {e}"))
            }
        })?;
        if copied > left {
            return Err(ArchiveError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        self.done.bytes += copied;
        out.flush()?;
        // The mode given at creation passes through the umask; set it exactly.
        out.set_permissions(fs::Permissions::from_mode(perm))?;
        Ok(())
    }

    fn symlink(&mut self, path: &Path, target: &Path) -> Result<(), ArchiveError> {
        self.count()?;
        let shown = path.display().to_string();
        let rel = Self::relative(path)?
            .ok_or_else(|| refused(&shown, "a symlink in place of the release directory"))?;
        // Where the link points, read lexically from its own directory, must stay inside.
        let mut depth = rel.components().count() as i64 - 1;
        for c in target.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => depth -= 1,
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused(&shown, "a symlink to an absolute path"))
                }
            }
            if depth < 0 {
                return Err(refused(
                    &shown,
                    "a symlink that leads out of the release directory",
                ));
            }
        }
        if target.as_os_str().is_empty() {
            return Err(refused(&shown, "a symlink without a target"));
        }
        let dest = self
            .place(path)?
            .ok_or_else(|| refused(&shown, "a symlink in place of the release directory"))?;
        std::os::unix::fs::symlink(target, dest)?;
        Ok(())
    }
}

/// A reader that fails once more than `left` bytes came through it.
struct Budget<R> {
    inner: R,
    left: u64,
}

impl<R> Budget<R> {
    fn new(inner: R, left: u64) -> Self {
        Self { inner, left }
    }
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                "the archive stream is too large",
            )
        })?;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
