//! Validation of submitted SSH public keys and crash-safe appends to an authorized-keys file.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ssh_key::{Algorithm, PublicKey};
use tokio::sync::Mutex;

/// Algorithms accepted; anything else is refused by name.
const KNOWN_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why a submitted key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("ssh_public_key is not valid base64")]
    NotBase64,
    #[error("ssh_public_key does not decode to UTF-8 text")]
    NotUtf8,
    #[error("ssh_public_key is empty")]
    Empty,
    #[error("ssh_public_key holds {0} keys; exactly one is allowed")]
    SeveralKeys(usize),
    #[error("ssh_public_key contains a newline; exactly one key line is allowed")]
    Newline,
    #[error("ssh_public_key contains a control character")]
    ControlCharacter,
    #[error("ssh_public_key has an options prefix (`{0}`); options are not allowed")]
    OptionsPrefix(String),
    #[error("ssh_public_key uses unknown algorithm `{0}`")]
    UnknownAlgorithm(String),
    #[error("ssh_public_key is not a valid OpenSSH public key: {0}")]
    Invalid(String),
}

/// A validated key: its normalized line and parsed form.
#[derive(Debug, Clone)]
pub struct ValidKey {
    pub line: String,
    key: PublicKey,
}

/// Decodes and validates the `ssh_public_key` field: base64 of one OpenSSH key line.
pub fn validate(encoded: &str) -> Result<ValidKey, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| KeyError::NotBase64)?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::NotUtf8)?;
    // `base64 < id_ed25519.pub` keeps the file's final newline; that one is harmless.
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Err(KeyError::Empty);
    }
    if line.contains(['\n', '\r']) {
        let keys = line
            .lines()
            .filter(|l| PublicKey::from_openssh(l.trim()).is_ok())
            .count();
        return Err(if keys > 1 {
            KeyError::SeveralKeys(keys)
        } else {
            KeyError::Newline
        });
    }
    if line.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    let line = line.trim();
    let first = line.split_whitespace().next().unwrap_or_default();
    if !KNOWN_ALGORITHMS.contains(&first) {
        // An authorized_keys options prefix comes before the algorithm.
        if line
            .split_whitespace()
            .skip(1)
            .any(|t| KNOWN_ALGORITHMS.contains(&t))
            || first.contains('=')
        {
            return Err(KeyError::OptionsPrefix(first.to_owned()));
        }
        return Err(KeyError::UnknownAlgorithm(first.to_owned()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| KeyError::Invalid(e.to_string()))?;
    if matches!(key.algorithm(), Algorithm::Other(_)) || key.algorithm().as_str() != first {
        return Err(KeyError::Invalid(format!(
            "the key line says `{first}` but its data is `{}`",
            key.algorithm().as_str()
        )));
    }
    Ok(ValidKey {
        line: line.to_owned(),
        key,
    })
}

/// What appending a key did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    Saved,
    AlreadyPresent,
}

/// An authorized-keys file with serialized, crash-safe appends.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    lock: Mutex<()>,
}

impl KeyFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds the key unless the same key data is already in the file.
    ///
    /// The new content is written to a temporary file in the same directory,
    /// fsynced and renamed over the old one, so a crash leaves either the old
    /// or the new file, never a torn one.
    pub async fn append(&self, key: &ValidKey) -> std::io::Result<Appended> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || append_blocking(&path, &key))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// The lock file beside `path` that every writer of it holds: `.authorized_keys.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "authorized_keys".into());
    path.with_file_name(format!(".{name}.lock"))
}

fn append_blocking(path: &Path, key: &ValidKey) -> std::io::Result<Appended> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Several instances may share one file: the read-modify-rename holds an exclusive lock
    // across processes, or concurrent posts would each rename over the others' keys.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(path))?;
    lock.lock()?;
    let result = append_locked(path, key);
    let _ = lock.unlock();
    result
}

fn append_locked(path: &Path, key: &ValidKey) -> std::io::Result<Appended> {
    let existing = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let present = String::from_utf8_lossy(&existing)
        .lines()
        .filter_map(|l| l.parse::<ssh_key::authorized_keys::Entry>().ok())
        .any(|entry| entry.public_key().key_data() == key.key.key_data());
    if present {
        return Ok(Appended::AlreadyPresent);
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(&existing)?;
    if !existing.is_empty() && !existing.ends_with(b"\n") {
        tmp.write_all(b"\n")?;
    }
    tmp.write_all(key.line.as_bytes())?;
    tmp.write_all(b"\n")?;
    set_mode(tmp.as_file(), path)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(Appended::Saved)
}

/// Keeps the old file's permissions, or 0600 for a new file: sshd refuses group- or world-writable ones.
fn set_mode(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o600,
    };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIVYoSgXvLEJbYNnfHdViZNZU2l4eKYBHj+qfFYhp0EV alice@example";
    pub const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZhc46SpR86M30JK3zAgzzsyeCErmciXYg++plekDK1 bob@example";

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// A valid ed25519 key line for `seed`, built in the wire format.
    fn key_line(seed: u8) -> String {
        let mut blob = Vec::new();
        for part in [b"ssh-ed25519".as_slice(), &[seed; 32]] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        format!("ssh-ed25519 {} k{seed}", b64_bytes(&blob))
    }

    fn b64_bytes(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn writers_in_other_processes_lose_no_key() {
        // Each writer has its own KeyFile, as each instance process would: only the lock on
        // disk orders them.
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("authorized_keys");
        let writers = 36u8;
        let start = std::sync::Arc::new(std::sync::Barrier::new(usize::from(writers)));
        let threads: Vec<_> = (0..writers)
            .map(|i| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    let key = validate(&b64(&key_line(i))).expect("valid key");
                    start.wait();
                    append_blocking(&path, &key).expect("append")
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("writer"), Appended::Saved);
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), usize::from(writers), "{text}");
    }

    #[test]
    fn accepts_one_key_with_or_without_trailing_newline() {
        assert_eq!(validate(&b64(ED25519)).expect("valid").line, ED25519);
        assert_eq!(
            validate(&b64(&format!("{ED25519}\n"))).expect("valid").line,
            ED25519
        );
    }

    #[test]
    fn refuses_each_kind_of_bad_input() {
        assert_eq!(validate("***").unwrap_err(), KeyError::NotBase64);
        assert_eq!(validate(&b64("")).unwrap_err(), KeyError::Empty);
        assert_eq!(
            validate(&b64(&format!("{ED25519}\n{ED25519_B}"))).unwrap_err(),
            KeyError::SeveralKeys(2)
        );
        let split = ED25519.replacen(' ', "\n", 1);
        assert_eq!(validate(&b64(&split)).unwrap_err(), KeyError::Newline);
        assert_eq!(
            validate(&b64(&format!("{ED25519}\u{7}"))).unwrap_err(),
            KeyError::ControlCharacter
        );
        assert!(matches!(
            validate(&b64(&format!("command=\"/bin/sh\" {ED25519}"))).unwrap_err(),
            KeyError::OptionsPrefix(_)
        ));
        assert!(matches!(
            validate(&b64(&format!("from=\"10.0.0.1\" {ED25519}"))).unwrap_err(),
            KeyError::OptionsPrefix(_)
        ));
        assert_eq!(
            validate(&b64("ssh-foo AAAAB3NzaC1yc2E bob")).unwrap_err(),
            KeyError::UnknownAlgorithm("ssh-foo".into())
        );
        assert!(matches!(
            validate(&b64("ssh-ed25519 AAAAnotakey")).unwrap_err(),
            KeyError::Invalid(_)
        ));
        let mislabeled = ED25519.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(matches!(
            validate(&b64(&mislabeled)).unwrap_err(),
            KeyError::Invalid(_)
        ));
    }

    #[tokio::test]
    async fn appends_once_and_keeps_other_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, "# existing\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZhc46SpR86M30JK3zAgzzsyeCErmciXYg++plekDK1 bob").expect("seed");
        let file = KeyFile::new(path.clone());
        let key = validate(&b64(ED25519)).expect("valid");
        assert_eq!(file.append(&key).await.expect("append"), Appended::Saved);
        assert_eq!(
            file.append(&key).await.expect("append"),
            Appended::AlreadyPresent
        );
        let other = validate(&b64(ED25519_B)).expect("valid");
        assert_eq!(
            file.append(&other).await.expect("append"),
            Appended::AlreadyPresent
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("alice@example").count(), 1);
        assert!(text.starts_with("# existing\n"));
        assert!(text.ends_with(&format!("bob\n{ED25519}\n")));
    }
}
