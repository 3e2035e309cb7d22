//! Header handling: hop-by-hop removal, X-Forwarded-*, request ids, and the stack file's rules.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    // Belongs to an h2c upgrade (RFC 9113 §3.2.1), which is never passed on.
    "http2-settings",
];

/// Fields a client's `Connection` cannot name away: the target needs `Host`, and the
/// forwarding fields are the proxy's to write.
pub(crate) const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// The proxy's own mark on answers it made itself; a target's is removed, so that an app's
/// 5xx never passes for the proxy's.
pub(crate) const PROXY_ERROR_FIELD: &str = "x-cutover-error";

/// Upgrades passed to a target when the stack file names none.
pub const DEFAULT_UPGRADES: [&str; 1] = ["websocket"];

/// Rules for one direction: remove, then set (replace), then add (append beside what is there).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// Header rules for requests and responses, from the stack file.
#[derive(Debug, Clone)]
pub struct HeaderRules {
    pub request: Rules,
    pub response: Rules,
    /// Protocols a client may upgrade to (`Upgrade` tokens, lower case); any other upgrade is
    /// refused so that nothing reaches a target past the proxy's header handling.
    pub upgrades: Vec<String>,
}

impl Default for HeaderRules {
    fn default() -> Self {
        Self {
            request: Rules::default(),
            response: Rules::default(),
            upgrades: DEFAULT_UPGRADES.iter().map(|u| (*u).to_owned()).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("header rule `{0}`: {1}")]
pub struct RuleError(String, String);

fn pairs(
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, RuleError> {
    map.iter()
        .map(|(name, value)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| RuleError(name.clone(), e.to_string()))?;
            let v =
                HeaderValue::from_str(value).map_err(|e| RuleError(name.clone(), e.to_string()))?;
            Ok((n, v))
        })
        .collect()
}

fn names(list: &[String]) -> Result<Vec<HeaderName>, RuleError> {
    list.iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| RuleError(name.clone(), e.to_string()))
        })
        .collect()
}

impl HeaderRules {
    pub fn from_listener(l: &cutover_spec::Listener) -> Result<Self, RuleError> {
        Ok(Self {
            request: Rules {
                set: pairs(&l.request_headers)?,
                add: pairs(&l.add_request_headers)?,
                remove: names(&l.remove_request_headers)?,
            },
            response: Rules {
                set: pairs(&l.response_headers)?,
                add: pairs(&l.add_response_headers)?,
                remove: names(&l.remove_response_headers)?,
            },
            upgrades: l.upgrades.iter().map(|u| u.to_ascii_lowercase()).collect(),
        })
    }
}

/// Removes hop-by-hop headers, and any named in `Connection`; keeps `Upgrade` when the exchange upgrades.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    // Most messages carry none: one pass over the names they have is cheaper than looking up
    // (and parsing) every hop-by-hop name.
    let any = headers
        .keys()
        .any(|k| k == UPGRADE || HOP_BY_HOP.contains(&k.as_str()));
    if !any {
        if upgrading {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrading && n == UPGRADE))
        .filter(|n| !PROTECTED.contains(&n.as_str()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrading {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Whether a request asks to switch protocols (WebSocket and other HTTP/1.1 upgrades).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Whether the upgrade asked for is to WebSocket (`websocket`, any case, any version suffix).
pub fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let name = t.trim().split('/').next().unwrap_or("");
            name.eq_ignore_ascii_case("websocket")
        })
}

/// Whether every protocol the `Upgrade` field asks for is one the stack file allows
/// (`websocket/13` counts as `websocket`).
pub fn upgrade_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut any = false;
    for value in headers.get_all(UPGRADE) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for token in value.split(',') {
            let name = token.split('/').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return false;
            }
            any = true;
        }
    }
    any
}

/// The client side of a connection, worked out once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub ip_header: HeaderValue,
    pub scheme: &'static str,
}

impl Client {
    pub fn new(ip: IpAddr, scheme: &'static str) -> Self {
        let ip_header =
            HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            ip,
            ip_header,
            scheme,
        }
    }
}

// Parsed once, at compile time, rather than on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds X-Forwarded-For/Proto/Host and an `x-request-id` when the client sent none.
pub fn add_forwarded(headers: &mut HeaderMap, client: &Client, host: Option<&HeaderValue>) {
    let xff = X_FORWARDED_FOR;
    let appended = headers
        .get(&xff)
        .and_then(|v| v.to_str().ok())
        .and_then(|prior| HeaderValue::from_str(&format!("{prior}, {}", client.ip)).ok());
    headers.insert(xff, appended.unwrap_or_else(|| client.ip_header.clone()));
    let scheme = client.scheme;
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    if let Some(host) = host.or_else(|| headers.get(HOST)).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !headers.contains_key(&X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_bytes(&request_id()) {
            headers.insert(X_REQUEST_ID, v);
        }
    }
}

/// A fresh `x-request-id`: 128 random bits in hex.
pub(crate) fn request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let mut n = fastrand::u128(..);
    for byte in id.iter_mut() {
        *byte = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    id
}

pub fn apply(headers: &mut HeaderMap, rules: &Rules) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &rules.add {
        headers.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get(CONNECTION).is_none()
        );
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn keeps_upgrade_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_and_keep_request_ids() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(HOST, HeaderValue::from_static("shop.example"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        add_forwarded(
            &mut h,
            &Client::new("127.0.0.1".parse().expect("ip"), "https"),
            None,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(h["x-request-id"], "abc");
        let mut fresh = HeaderMap::new();
        add_forwarded(
            &mut fresh,
            &Client::new("127.0.0.1".parse().expect("ip"), "http"),
            None,
        );
        assert_eq!(fresh["x-request-id"].len(), 32);
    }
}
