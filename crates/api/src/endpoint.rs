//! One request of a protocol: its method, its route, its reply.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A request type. A `Post` sends the value as its JSON body; a `Get` or `Delete` sends
/// nothing but what `path()` carries.
pub trait Endpoint: Serialize {
    const METHOD: Method;
    /// The route as the server mounts it, parameters in braces (`/drains/{id}`).
    const ROUTE: &'static str;
    type Reply: Serialize + DeserializeOwned;

    /// The path a client sends, parameters filled in.
    fn path(&self) -> String {
        Self::ROUTE.to_owned()
    }
}

/// The reply of a request that only has to be carried out. An empty body reads as one too, so
/// a data plane from before these types still answers in a way its controller understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {}

impl Ack {
    /// Decodes a reply body, reading an empty one as JSON `{}`.
    pub fn body(bytes: &[u8]) -> &[u8] {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            bytes
        }
    }
}

/// What either server answers with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
