//! Hostile archives, one class per test: each fails without the writer's check it names.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .expect("exists")
        .permissions()
        .mode()
        & 0o7777
}

/// A tar entry written header by header, so that names and types tar's builder would refuse
/// (`..`, devices) can be made.
fn tar_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: &str,
) {
    let mut h = tar::Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_tar(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

struct Case {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    root: PathBuf,
}

fn case(name: &str, bytes: &[u8]) -> Case {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join(name);
    fs::write(&file, bytes).expect("write");
    let root = tmp.path().join("root");
    Case {
        _tmp: tmp,
        file,
        root,
    }
}

fn unpack_case(c: &Case) -> Result<Unpacked, ArchiveError> {
    unpack(&c.file, &c.root, &Limits::default())
}

fn zip_of(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut buf = io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, mode, data) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            w.start_file(*name, options).expect("start");
            w.write_all(data).expect("data");
        }
        w.finish().expect("finish");
    }
    // The writer keeps only permission bits; the central directory is patched so each entry
    // carries exactly the mode (type and special bits) a hostile archive could.
    let mut bytes = buf.into_inner();
    let mut at = 0;
    for (_, mode, _) in entries {
        let found = bytes[at..]
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .expect("a central directory entry")
            + at;
        bytes[found + 5] = 3; // made on Unix
        bytes[found + 38..found + 42].copy_from_slice(&(mode << 16).to_le_bytes());
        at = found + 4;
    }
    bytes
}

#[test]
fn setuid_setgid_sticky_and_world_writable_bits_never_survive() {
    let mut t = Vec::new();
    tar_entry(&mut t, "bin/su", tar::EntryType::Regular, 0o6755, b"x", "");
    tar_entry(&mut t, "open", tar::EntryType::Regular, 0o1777, b"x", "");
    let c = case("a.tar", &finish_tar(t));
    unpack_case(&c).expect("unpacks");
    assert_eq!(mode_of(&c.root.join("bin/su")), 0o755);
    assert_eq!(mode_of(&c.root.join("open")), 0o755);
    assert_eq!(mode_of(&c.root.join("bin")), 0o755);

    let z = zip_of(&[("su", 0o104755, b"x"), ("w", 0o100666, b"y")]);
    let mut read = zip::ZipArchive::new(io::Cursor::new(z.clone())).expect("zip");
    assert_eq!(read.by_index(0).expect("su").unix_mode(), Some(0o104755));
    let c = case("a.zip", &z);
    unpack_case(&c).expect("unpacks");
    assert_eq!(mode_of(&c.root.join("su")), 0o755);
    assert_eq!(mode_of(&c.root.join("w")), 0o644);
}

#[test]
fn devices_and_fifos_are_refused_in_every_format() {
    for kind in [
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
        tar::EntryType::Link,
    ] {
        let mut t = Vec::new();
        tar_entry(&mut t, "dev", kind, 0o644, b"", "x");
        let c = case("d.tar", &finish_tar(t));
        let e = unpack_case(&c).expect_err("refused");
        assert!(matches!(e, ArchiveError::Refused { .. }), "{kind:?}: {e}");
        assert!(!c.root.join("dev").exists());
    }
    let c = case("d.zip", &zip_of(&[("fifo", 0o010644, b"")]));
    let e = unpack_case(&c).expect_err("refused");
    assert!(e.to_string().contains("fifos"), "{e}");
}

#[test]
fn paths_and_symlinks_that_leave_the_root_are_refused() {
    for (name, kind, link) in [
        ("../escape", tar::EntryType::Regular, ""),
        ("/etc/escape", tar::EntryType::Regular, ""),
        ("up", tar::EntryType::Symlink, "../outside"),
        ("deep/up", tar::EntryType::Symlink, "../../outside"),
        ("abs", tar::EntryType::Symlink, "/etc/passwd"),
    ] {
        let mut t = Vec::new();
        tar_entry(&mut t, name, kind, 0o644, b"x", link);
        let c = case("p.tar", &finish_tar(t));
        let e = unpack_case(&c).expect_err(name);
        assert!(matches!(e, ArchiveError::Refused { .. }), "{name}: {e}");
    }
    // Two links that each look contained but chain out: the write through them is refused,
    // and nothing is created outside the root.
    let mut t = Vec::new();
    tar_entry(&mut t, "a/e", tar::EntryType::Symlink, 0o777, b"", "..");
    tar_entry(&mut t, "y", tar::EntryType::Symlink, 0o777, b"", "a/e/..");
    tar_entry(
        &mut t,
        "y/made/evil",
        tar::EntryType::Regular,
        0o644,
        b"x",
        "",
    );
    let c = case("chain.tar", &finish_tar(t));
    let e = unpack_case(&c).expect_err("chained escape");
    assert!(e.to_string().contains("leads out"), "{e}");
    let outside = c.root.parent().expect("parent");
    assert!(!outside.join("made").exists());
    // A contained link is kept, and a file through it lands inside.
    let mut t = Vec::new();
    tar_entry(&mut t, "sub/", tar::EntryType::Directory, 0o755, b"", "");
    tar_entry(&mut t, "link", tar::EntryType::Symlink, 0o777, b"", "sub");
    tar_entry(&mut t, "link/f", tar::EntryType::Regular, 0o644, b"in", "");
    let c = case("ok.tar", &finish_tar(t));
    unpack_case(&c).expect("contained");
    assert_eq!(fs::read(c.root.join("sub/f")).expect("inside"), b"in");
}

#[test]
fn a_later_entry_replaces_a_symlink_instead_of_writing_through_it() {
    let tmp_target = tempfile::tempdir().expect("tmp");
    let victim = tmp_target.path().join("victim");
    fs::write(&victim, "safe").expect("victim");
    let mut t = Vec::new();
    tar_entry(&mut t, "sub/", tar::EntryType::Directory, 0o755, b"", "");
    tar_entry(&mut t, "sub/f", tar::EntryType::Regular, 0o644, b"orig", "");
    tar_entry(&mut t, "x", tar::EntryType::Symlink, 0o777, b"", "sub/f");
    tar_entry(&mut t, "x", tar::EntryType::Regular, 0o644, b"new", "");
    let c = case("dup.tar", &finish_tar(t));
    unpack_case(&c).expect("unpacks");
    assert_eq!(fs::read(c.root.join("sub/f")).expect("kept"), b"orig");
    assert_eq!(fs::read(c.root.join("x")).expect("file"), b"new");
    assert!(!fs::symlink_metadata(c.root.join("x"))
        .expect("x")
        .file_type()
        .is_symlink());
}

#[test]
fn the_unpacked_size_and_entry_count_are_capped() {
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 10,
    };
    // A gzip bomb: 8 MiB of zeros in a few KiB.
    let mut t = Vec::new();
    tar_entry(
        &mut t,
        "zeros",
        tar::EntryType::Regular,
        0o644,
        &vec![0u8; 8 << 20],
        "",
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&finish_tar(t)).expect("gz");
    let bomb = gz.finish().expect("gz");
    assert!(bomb.len() < 64 << 10);
    let c = case("bomb.tar.gz", &bomb);
    let e = unpack(&c.file, &c.root, &limits).expect_err("too large");
    assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");

    let c = case(
        "bomb.zip",
        &zip_of(&[("zeros", 0o100644, &vec![0u8; 8 << 20])]),
    );
    let e = unpack(&c.file, &c.root, &limits).expect_err("too large");
    assert!(matches!(e, ArchiveError::TooLarge { .. }), "{e}");

    let mut t = Vec::new();
    for i in 0..11 {
        tar_entry(
            &mut t,
            &format!("f{i}"),
            tar::EntryType::Regular,
            0o644,
            b"",
            "",
        );
    }
    let c = case("many.tar", &finish_tar(t));
    let e = unpack(&c.file, &c.root, &limits).expect_err("too many");
    assert!(matches!(e, ArchiveError::TooManyEntries { .. }), "{e}");

    // Just under both limits is fine.
    let mut t = Vec::new();
    tar_entry(
        &mut t,
        "f",
        tar::EntryType::Regular,
        0o644,
        &vec![1u8; 1 << 20],
        "",
    );
    let c = case("fits.tar", &finish_tar(t));
    let done = unpack(&c.file, &c.root, &limits).expect("fits");
    assert_eq!(done.bytes, 1 << 20);
}

#[test]
fn a_single_executable_is_runnable_and_nothing_more() {
    let c = case("app-v1", b"#!/bin/sh\necho hi\n");
    unpack_case(&c).expect("copied");
    assert_eq!(mode_of(&c.root.join("app-v1")), 0o755);
    let c = case("garbage.tar.gz", b"not gzip at all");
    assert!(matches!(
        unpack_case(&c).expect_err("garbage"),
        ArchiveError::Malformed(_) | ArchiveError::Io(_)
    ));
}
