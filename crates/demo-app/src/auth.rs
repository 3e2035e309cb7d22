//! HTTP Basic credentials, checked in constant time.

use base64::Engine;
use subtle::ConstantTimeEq;

/// The one user allowed to call the admin endpoint.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Whether an `Authorization` header value carries these credentials.
    ///
    /// Both halves are always compared so the time taken does not say which
    /// one was wrong.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(decode_basic) else {
            return false;
        };
        let user_ok = user.as_bytes().ct_eq(self.user.as_bytes());
        let password_ok = password.as_bytes().ct_eq(self.password.as_bytes());
        bool::from(user_ok & password_ok)
    }
}

fn decode_basic(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn admits_only_the_exact_pair() {
        let creds = Credentials::new("admin", "s3cret");
        assert!(creds.admits(Some(&basic("admin:s3cret"))));
        assert!(!creds.admits(Some(&basic("admin:s3cre"))));
        assert!(!creds.admits(Some(&basic("root:s3cret"))));
        assert!(!creds.admits(Some(&basic("admins3cret"))));
        assert!(!creds.admits(Some(b"Bearer abc")));
        assert!(!creds.admits(Some(b"Basic !!!")));
        assert!(!creds.admits(None));
    }

    #[test]
    fn password_may_contain_colons() {
        let creds = Credentials::new("admin", "a:b:c");
        assert!(creds.admits(Some(&basic("admin:a:b:c"))));
    }
}
