//! Raw HTTP/1.x on a client connection: requests written as bytes, responses split by hand.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Stack;

/// One response read off a client connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits what a client read into responses: by content-length, chunks, or to the end. The
/// answer to a HEAD (the index of which is in `heads`) has no body whatever its fields say.
pub fn answers(wire: &[u8], heads: &[usize]) -> Vec<Answer> {
    split(wire, heads, true)
}

/// Like [`answers`], for wire that may hold garbage: what is not a response head ends the
/// list as an answer with status 0 and the rest as its body.
pub fn answers_or_garbage(wire: &[u8], heads: &[usize]) -> Vec<Answer> {
    split(wire, heads, false)
}

fn split(mut wire: &[u8], heads: &[usize], strict: bool) -> Vec<Answer> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(wire) {
            Ok(httparse::Status::Complete(len)) => len,
            _ if !strict => {
                out.push(Answer {
                    status: 0,
                    headers: Vec::new(),
                    body: wire.to_vec(),
                });
                return out;
            }
            Ok(httparse::Status::Partial) => panic!("a response head cut short: {wire:?}"),
            Err(e) => panic!("a response head: {e}: {wire:?}"),
        };
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let status = parsed.code.expect("status");
        wire = &wire[len..];
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        // 1xx, 204 and 304 never have a body (RFC 9112 §6.3), whatever their fields say.
        let bodiless = status < 200 || status == 204 || status == 304;
        let body = if heads.contains(&out.len()) || bodiless {
            Vec::new()
        } else if let Some(n) = get("content-length") {
            let n: usize = n.parse().expect("length");
            let (body, rest) = wire.split_at(n.min(wire.len()));
            wire = rest;
            body.to_vec()
        } else if get("transfer-encoding").is_some_and(|v| v == "chunked") {
            let mut body = Vec::new();
            loop {
                let end = wire
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("size line");
                let size =
                    usize::from_str_radix(std::str::from_utf8(&wire[..end]).expect("ascii"), 16)
                        .expect("hex size");
                wire = &wire[end + 2..];
                if size == 0 {
                    assert!(wire.starts_with(b"\r\n"), "chunked body ends with CRLF");
                    wire = &wire[2..];
                    break;
                }
                body.extend_from_slice(&wire[..size]);
                wire = &wire[size + 2..];
            }
            body
        } else {
            let body = wire.to_vec();
            wire = &[];
            body
        };
        out.push(Answer {
            status,
            headers,
            body,
        });
    }
    out
}

/// Writes `request` and reads until the proxy closes the connection.
pub async fn exchange(stack: &Stack, request: &[u8], heads: &[usize]) -> Vec<Answer> {
    let mut s = TcpStream::connect(stack.addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut wire = Vec::new();
    tokio::time::timeout(super::DEADLINE, s.read_to_end(&mut wire))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    answers(&wire, heads)
}
