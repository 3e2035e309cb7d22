//! The URL under load, parsed once into what each request needs.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

/// Why a URL cannot be probed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("`{0}` is not a valid URL: {1}")]
    Invalid(String, String),
    #[error("`{0}`: scheme `{1}` is not supported (use http://)")]
    Scheme(String, String),
    #[error("`{0}` has no host")]
    NoHost(String),
}

/// Where requests go: the address to connect to and the request line to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub authority: Authority,
    pub path: PathAndQuery,
    /// `host:port` to connect to.
    pub connect_to: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| TargetError::Invalid(url.into(), e.to_string()))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) => return Err(TargetError::Scheme(url.into(), s.to_string())),
            None => return Err(TargetError::Scheme(url.into(), String::new())),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| TargetError::NoHost(url.into()))?;
        if authority.host().is_empty() {
            return Err(TargetError::NoHost(url.into()));
        }
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let connect_to = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Self {
            authority,
            path,
            connect_to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/health?x=1").expect("valid");
        assert_eq!(t.connect_to, "127.0.0.1:8080");
        assert_eq!(t.path.as_str(), "/health?x=1");
        let t = Target::parse("http://localhost").expect("valid");
        assert_eq!(t.connect_to, "localhost:80");
        assert_eq!(t.path.as_str(), "/");
        assert_eq!(
            Target::parse("http://[::1]:9/").expect("valid").connect_to,
            "[::1]:9"
        );
    }

    #[test]
    fn refuses_other_schemes_and_garbage() {
        assert!(matches!(
            Target::parse("ftp://x/"),
            Err(TargetError::Scheme(..))
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:80"),
            Err(TargetError::Scheme(..))
        ));
        assert!(matches!(
            Target::parse("http://exa mple"),
            Err(TargetError::Invalid(..))
        ));
    }
}
