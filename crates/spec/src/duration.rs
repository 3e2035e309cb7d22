//! Durations as people write them in stack files: `2s`, `500ms`, `5m`, `1h 30m`.

use std::time::Duration;

/// The longest duration accepted anywhere (30 days). Every deadline is `now + duration`, so a
/// bound here is what keeps clock arithmetic from overflowing, whatever a file or flag says.
pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

pub fn parse(s: &str) -> Result<Duration, String> {
    let shown: String = s.chars().take(40).collect();
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{shown}` is not a duration such as \"2s\" or \"5m\" ({e})"))?;
    if d > MAX {
        return Err(format!(
            "`{shown}` is longer than the longest duration allowed, {}",
            format(MAX)
        ));
    }
    Ok(d)
}

pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(d).to_string()
}

pub mod serde_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in ["2s", "500ms", "5m", "1h 30m", "0s"] {
            let d = parse(text).expect("valid");
            assert_eq!(parse(&format(d)).expect("valid"), d);
        }
        assert!(parse("2 parsecs").is_err());
        assert!(parse("").is_err());
        assert_eq!(parse("30days").expect("the bound itself"), MAX);
        for huge in ["18446744073709551615s", "31days", "1000y"] {
            let e = parse(huge).expect_err(huge);
            assert!(e.contains("longest"), "{e}");
        }
    }
}
