//! Property-based fuzzing of every parser a client or a target reaches: the request head
//! (the proxy's own path), the target's response head and the chunked decoder. Each starts
//! from the seeds in `fuzz/corpus/<target>/` and from arbitrary bytes; `scripts/fuzz` runs
//! them longer (`PROPTEST_CASES`) than the test suite does.

use std::path::PathBuf;

use bytes::BytesMut;
use http::Method;
use proptest::prelude::*;

use crate::downstream;
use crate::forward::Proxy;
use crate::headers::{Client, HeaderRules};
use crate::registry::Registry;
use crate::upstream::{self, Chunk, Framing, Line};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out.sort();
    out
}

/// A seed (or arbitrary bytes) with a few bytes overwritten, inserted or cut off.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds(target);
    let seeded = (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..8),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut bytes, edits, cut)| {
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            // Now and then the input is cut short, as a slow peer's first read would be.
            if !bytes.is_empty() && cut.index(4) == 0 {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        });
    prop_oneof![4 => seeded, 1 => proptest::collection::vec(any::<u8>(), 0..512)]
}

/// One proxy for every case; its registry needs a runtime to exist in.
fn proxy() -> &'static Proxy {
    static PROXY: std::sync::OnceLock<(tokio::runtime::Runtime, Proxy)> =
        std::sync::OnceLock::new();
    let (_, proxy) = PROXY.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let proxy = {
            let _inside = rt.enter();
            Proxy::new(Registry::new(), HeaderRules::default())
        };
        (rt, proxy)
    });
    proxy
}

proptest! {
    /// Whatever a client sends, the proxy's own request parser does not panic, and a head it
    /// takes goes to the target as one well-formed head with at most one Host.
    #[test]
    fn request_heads(bytes in input("request_head")) {
        let proxy = proxy();
        let client = Client::new("192.0.2.7".parse().expect("ip"), "http");
        let mut head = Vec::new();
        if let Some(len) = downstream::parse_for_fuzz(&bytes, proxy, &client, &mut head) {
            prop_assert!(len <= bytes.len());
            let mut fields = [httparse::EMPTY_HEADER; 256];
            let mut req = httparse::Request::new(&mut fields);
            let parsed = req.parse(&head);
            prop_assert!(
                matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len()),
                "forwarded head does not parse whole: {:?}",
                String::from_utf8_lossy(&head)
            );
            let hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).count();
            prop_assert!(hosts <= 1);
        }
    }

    /// Whatever a target answers, the response-head parser does not panic and never claims
    /// more bytes than it was given.
    #[test]
    fn response_heads(bytes in input("response_head"), head_request in any::<bool>()) {
        let method = if head_request { Method::HEAD } else { Method::GET };
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(head)) = upstream::parse_head(&mut buf, &method) {
            prop_assert!(buf.len() <= bytes.len());
            let _ = head.headers();
        }
    }

    /// The chunked decoder ends on any input: each call takes bytes, ends, fails, or waits.
    #[test]
    fn chunked_bodies(bytes in input("chunked")) {
        let mut framing = Framing::Chunked(Chunk::Line(Line::Size));
        let mut buf = BytesMut::from(&bytes[..]);
        let mut total = 0usize;
        for _ in 0..=bytes.len() + 2 {
            let before = buf.len();
            match upstream::decode(&mut framing, &mut buf) {
                Ok(Some(data)) => total += data.len(),
                Ok(None) | Err(_) => break,
            }
            prop_assert!(buf.len() <= before);
        }
        prop_assert!(total <= bytes.len());
    }
}
