//! Durations as people write them in stack files: `2s`, `500ms`, `5m`, `1h 30m`.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration such as \"2s\" or \"5m\" ({e})"))
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
    }
}
