//! Property-based fuzzing of the archive unpacker: the seed releases in
//! `fuzz/corpus/archive/` (tar, tar.gz, zip) with bytes overwritten, inserted and cut. Whatever
//! the bytes, unpacking does not panic, writes nothing outside its root, and leaves no file
//! with a setuid, setgid, sticky or world-writable bit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cutover_fetch::archive::{unpack, Limits};
use proptest::prelude::*;

fn seeds() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/archive");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("seeds")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            std::fs::read(e.path()).ok().map(|b| (name, b))
        })
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        out.push((e.path(), meta.permissions().mode()));
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}

proptest! {
    #[test]
    fn archives(
        (name, mut bytes) in proptest::sample::select(seeds()),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..12),
    ) {
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => bytes.truncate(i),
            }
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join(&name);
        std::fs::write(&file, &bytes).expect("write");
        let root = tmp.path().join("root");
        let limits = Limits { max_bytes: 1 << 20, max_entries: 1000 };
        let _ = unpack(&file, &root, &limits);
        let mut found = Vec::new();
        walk(tmp.path(), &mut found);
        for (path, mode) in found {
            prop_assert!(path == file || path.starts_with(&root), "{} was written outside the root", path.display());
            let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if path != file && !is_link {
                prop_assert_eq!(mode & 0o7002, 0, "{} has mode {:o}", path.display(), mode);
            }
        }
    }
}
