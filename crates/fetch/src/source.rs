//! A URL to fetch: the address, an optional `#sha256=HEX` checksum, and the file name it saves as.

use url::Url;

use crate::FetchError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// As given, checksum included: what reports show.
    pub raw: String,
    /// Without the checksum fragment: what is fetched.
    pub url: Url,
    pub sha256: Option<[u8; 32]>,
    /// The last path segment, percent-decoded.
    pub name: String,
}

pub(crate) const SCHEMES: [&str; 4] = ["http", "https", "s3", "file"];

impl Source {
    pub fn parse(raw: &str) -> Result<Self, FetchError> {
        let mut url =
            Url::parse(raw).map_err(|e| FetchError::BadUrl(raw.to_owned(), e.to_string()))?;
        if !SCHEMES.contains(&url.scheme()) {
            return Err(FetchError::Unsupported(url.scheme().to_owned()));
        }
        let sha256 = match url.fragment() {
            None => None,
            Some(f) => {
                Some(parse_sha256(f).ok_or_else(|| FetchError::BadChecksum(raw.to_owned()))?)
            }
        };
        url.set_fragment(None);
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|n| !n.is_empty() && n != "." && n != ".." && !n.contains('/'))
            .ok_or_else(|| FetchError::NoFileName(raw.to_owned()))?;
        Ok(Self {
            raw: raw.to_owned(),
            url,
            sha256,
            name,
        })
    }
}

fn parse_sha256(fragment: &str) -> Option<[u8; 32]> {
    let hex = fragment.strip_prefix("sha256=")?;
    parse_hex(hex)
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_checksums_and_schemes() {
        let s = Source::parse(&format!(
            "https://h/a/app%20v2.tar.gz#sha256={}",
            "ab".repeat(32)
        ))
        .expect("valid");
        assert_eq!(s.name, "app v2.tar.gz");
        assert_eq!(s.sha256, Some([0xab; 32]));
        assert_eq!(s.url.as_str(), "https://h/a/app%20v2.tar.gz");
        assert!(
            matches!(Source::parse("ftp://h/x"), Err(FetchError::Unsupported(s)) if s == "ftp")
        );
        assert!(matches!(
            Source::parse("https://h/"),
            Err(FetchError::NoFileName(_))
        ));
        assert!(matches!(
            Source::parse("https://h/x#sha256=12"),
            Err(FetchError::BadChecksum(_))
        ));
        assert!(matches!(
            Source::parse("nonsense"),
            Err(FetchError::BadUrl(..))
        ));
        assert!(matches!(
            Source::parse("https://h/a%2Fb"),
            Err(FetchError::NoFileName(_))
        ));
        assert_eq!(Source::parse("https://h/a+b").expect("plus").name, "a+b");
        assert_eq!(
            Source::parse("s3://bucket/k/app.zip").expect("s3").name,
            "app.zip"
        );
    }
}
