//! What cutover keeps on disk is its own: everything it creates is private whatever the
//! operator's umask, and the data dir is closed to other users.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{umask, Mode};

/// From here on, files, directories and sockets this process creates are readable by its
/// user only (SQLite's database and journal, logs, the control socket before it is bound).
/// Instances get the usual 022 back before they start.
pub fn restrict_umask() {
    umask(Mode::from_bits_truncate(0o077));
}

/// Creates the data dir if needed and sets its mode: 0700, or 0711 when instances run as
/// another user, who must be able to reach (never list) its release under `releases/`.
pub fn data_dir(dir: &Path, service_user: bool) -> std::io::Result<()> {
    let mode = if service_user { 0o711 } else { 0o700 };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_private_whatever_it_was() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("a/.cutover");
        data_dir(&dir, false).expect("made");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("open");
        data_dir(&dir, true).expect("again");
        assert_eq!(mode(&dir), 0o711);
    }
}
