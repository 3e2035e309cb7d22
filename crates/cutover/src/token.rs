//! The admin token: generated on first start, stored mode 0600 in the data dir, read by the CLI.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "admin.token";
/// Where the daemon writes its admin address, so the CLI finds it even on port 0.
pub const ADDR_FILE: &str = "admin.addr";

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, creating it (0600) when absent.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<String> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o077;
            if mode != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok(token.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
    let mut tmp = path.clone();
    tmp.set_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

pub fn read(data_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(token_path(data_dir))?
        .trim()
        .to_owned())
}
