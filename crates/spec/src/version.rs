//! The one rule for a release version, wherever a version enters: the stack file, the CLI,
//! the admin API and rollback targets. A version names a directory and a log file, so it must
//! be a plain, short file name.

/// Longest version accepted, in bytes.
pub const MAX_LEN: usize = 128;

/// `Ok` when `v` is a version: 1-128 letters, digits, `.`, `_`, `-` or `+`, starting with a
/// letter or digit (so never `.`, `..`, a hidden name or something that reads as a flag).
pub fn check(v: &str) -> Result<(), String> {
    let shown: String = v.chars().take(40).collect();
    let shown = if v.chars().count() > 40 {
        format!("{shown}...")
    } else {
        shown
    };
    if v.is_empty() {
        return Err("a version must not be empty".into());
    }
    if v.len() > MAX_LEN {
        return Err(format!(
            "version `{shown}` is {} bytes long; at most {MAX_LEN} are allowed",
            v.len()
        ));
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
    {
        return Err(format!(
            "version `{}` may hold only letters, digits, `.`, `_`, `-` or `+`",
            shown.escape_debug()
        ));
    }
    if !v.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!(
            "version `{shown}` must start with a letter or a digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_paths_flags_and_long_names_do_not() {
        for ok in ["v1", "1.2.3", "v2-rc.1+build_7", &"a".repeat(MAX_LEN)] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-v",
            "+1",
            "a/b",
            "../etc",
            "v 1",
            "v\n1",
            "vé",
            &"a".repeat(MAX_LEN + 1),
            &"a".repeat(300),
        ] {
            assert!(check(bad).is_err(), "{bad:?} passed");
        }
        let long = check(&"a".repeat(300)).expect_err("too long");
        assert!(long.contains("300 bytes"), "{long}");
    }
}
