//! HTTP/1.1 exchanges with a target on a pooled connection of our own, driven in the client's
//! task: the path for requests without a body, which are most of them.
//!
//! A general-purpose client runs each target connection as a task of its own and passes
//! requests, responses and body chunks between tasks over channels. For a request with no body
//! none of that buys anything: the head goes out in one write, the response is read on the same
//! task that answers the client. Measured against hyper's client on this path: about 11% less
//! CPU per proxied request (docs/benchmarks.md). Requests with a body and upgrades keep using
//! hyper's client.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::backend::InFlight;

/// The largest response head accepted from a target.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;
/// How much is read from a target at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Bodies framed by a length up to this are read whole before the head goes to the client.
const SMALL_BODY: u64 = 64 * 1024;
/// How long the rest of such a body is waited for before the answer goes out as it comes.
const SMALL_BODY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to a target, with what was read on it and not yet used.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    pub idle_since: Instant,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            idle_since: Instant::now(),
        }
    }

    /// What was read from the target and not yet used.
    pub(crate) fn buffered(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// A response was read to its end: back to the target's pool if the target keeps the
    /// connection open and sent nothing after the response.
    pub fn release(self, keep_alive: bool, backend: &crate::backend::Backend) {
        if keep_alive && self.buf.is_empty() {
            backend.checkin_raw(self);
        }
    }

    /// Whether nothing (no data, no close) arrived while the connection sat idle. A target that
    /// closed it, or wrote something unasked (a 408 before closing), must not get a request on it:
    /// what it wrote would be taken for the answer. One non-blocking read, which finds nothing.
    pub fn is_quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Why an exchange produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection closed or failed before a whole response head arrived: the target may or
    /// may not have seen the request (safe to send again only because it is idempotent).
    #[error("the target closed the connection before answering: {0}")]
    Closed(String),
    /// The connection failed in the middle of a small body read whole before answering: the
    /// target saw the request, and nothing went to the client, so an idempotent one can go
    /// elsewhere.
    #[error("the target broke off in the middle of its answer: {0}")]
    BrokeOff(String),
    /// The target answered with something that is not an HTTP/1.x response head; not retried.
    #[error("the target's response is malformed: {0}")]
    Malformed(String),
}

/// A response head from a target, and how its body is framed. The fields stay views of the
/// bytes read: the client-side path writes them out as they came, and only the hyper path builds
/// a [`HeaderMap`] ([`Head::headers`]).
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The reason phrase as the target sent it.
    reason: std::ops::Range<usize>,
    raw: Bytes,
    /// Name and value of each field, as offsets into `raw`; a Content-Length beside chunked is
    /// left out (RFC 9112 §6.3: the length must not reach the client with a re-framed body).
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
}

impl Head {
    /// Whether the body is a Server-Sent Events stream (`text/event-stream`), which the proxy
    /// ends cleanly rather than breaking it off: its clients reconnect where they left off. Only
    /// a body without a length can be one, so length-framed answers pay nothing to ask.
    pub fn is_event_stream(&self) -> bool {
        matches!(self.framing, Framing::Chunked(_) | Framing::UntilClose)
            && self.fields().any(|(name, value)| {
                name.eq_ignore_ascii_case(b"content-type")
                    && value.len() >= 17
                    && value[..17].eq_ignore_ascii_case(b"text/event-stream")
            })
    }

    /// The header fields in the order the target sent them.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    pub fn reason(&self) -> &[u8] {
        &self.raw[self.reason.clone()]
    }

    /// The fields as a header map whose values share the head's bytes.
    pub fn headers(&self) -> Result<HeaderMap, ExchangeError> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for (name, value) in &self.fields {
            let name = HeaderName::from_bytes(&self.raw[name.clone()]).map_err(|_| {
                ExchangeError::Malformed(format!(
                    "header name {:?}",
                    String::from_utf8_lossy(&self.raw[name.clone()])
                ))
            })?;
            let value = HeaderValue::from_maybe_shared(self.raw.slice(value.clone()))
                .map_err(|_| ExchangeError::Malformed(format!("value of {name}")))?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all (HEAD, 204, 304), or one whose bytes have all been read.
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Until the target closes the connection (no length, not chunked).
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// At a line.
    Line(Line),
}

/// The lines of a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// A chunk-size line.
    Size,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// A trailer field, or the final CRLF.
    Trailer,
}

/// The request's head as it goes to the target: origin-form, HTTP/1.1, its headers as they are.
pub fn request_head(parts: &http::request::Parts) -> Vec<u8> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(64 + path.len() + parts.headers.len() * 48);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Whether the bytes past `from` (with the two before, which may begin it) end a head: a blank
/// line, CRLF or bare LF. A head that arrives a byte at a time is then scanned once instead of
/// parsed again from its start on every read, which would cost the square of its length.
pub(crate) fn head_ends(buf: &[u8], from: usize) -> bool {
    let new = &buf[from.saturating_sub(2).min(buf.len())..];
    memchr::memmem::find(new, b"\n\r\n").is_some() || memchr::memmem::find(new, b"\n\n").is_some()
}

/// Writes the request head (the request has no body) and reads the response head.
pub async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    method: &Method,
) -> Result<Head, ExchangeError> {
    conn.stream
        .write_all(head)
        .await
        .map_err(|e| ExchangeError::Closed(e.to_string()))?;
    // How far the buffer is known to hold no whole head: a target that trickles its head is
    // parsed again only once a blank line has arrived, as on the client side.
    let mut scanned: Option<usize> = None;
    loop {
        if scanned.is_none_or(|from| head_ends(&conn.buf, from)) {
            if let Some(head) = parse_head(&mut conn.buf, method)? {
                whole_small_body(conn, &head).await?;
                return Ok(head);
            }
        }
        scanned = Some(conn.buf.len());
        if conn.buf.len() >= MAX_HEAD {
            return Err(ExchangeError::Malformed(format!(
                "response head longer than {MAX_HEAD} bytes"
            )));
        }
        conn.buf.reserve(READ_CHUNK);
        let n = read_some(&mut conn.stream, &mut conn.buf)
            .await
            .map_err(|e| ExchangeError::Closed(e.to_string()))?;
        if n == 0 {
            return Err(ExchangeError::Closed("end of stream".into()));
        }
    }
}

/// A small body framed by its length is read whole before the answer goes to the client, for a
/// moment at most: a target that breaks off in the middle of it (a reset, a crash) then costs
/// the client nothing, since nothing was sent yet and the request can go elsewhere. Most such
/// bodies came in the same read as their head, so this seldom waits; one still trickling after
/// [`SMALL_BODY_GRACE`] is passed on as it comes (and bounded by the body timeout) as before.
async fn whole_small_body(conn: &mut Conn, head: &Head) -> Result<(), ExchangeError> {
    let Framing::Length(len) = head.framing else {
        return Ok(());
    };
    if len > SMALL_BODY || conn.buf.len() as u64 >= len {
        return Ok(());
    }
    // At most SMALL_BODY, so it fits in usize.
    let len = len as usize;
    let rest = async {
        while conn.buf.len() < len {
            conn.buf.reserve(len - conn.buf.len());
            let n = read_some(&mut conn.stream, &mut conn.buf)
                .await
                .map_err(|e| ExchangeError::BrokeOff(e.to_string()))?;
            if n == 0 {
                return Err(ExchangeError::BrokeOff("end of stream".into()));
            }
        }
        Ok(())
    };
    tokio::time::timeout(SMALL_BODY_GRACE, rest)
        .await
        .unwrap_or(Ok(()))
}

async fn read_some(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    tokio::io::AsyncReadExt::read_buf(stream, buf).await
}

/// Parses one response head off the front of `buf`; `None` if it is not all there yet.
/// Interim (1xx) responses are skipped: a bodiless request never asked to switch protocols.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<Head>, ExchangeError> {
    loop {
        // Left uninitialised: zeroing 128 fields took longer than parsing a typical head.
        let mut fields = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let parser = httparse::ParserConfig::default();
        let len = match parser.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ExchangeError::Malformed(e.to_string())),
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Malformed(format!("status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Malformed(
                    "101 to a request without Upgrade".into(),
                ));
            }
            buf.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let start = buf.as_ptr() as usize;
        // Offsets of what httparse found, into `buf`. An empty part (no reason phrase, an
        // empty value) may be a slice of static memory instead: it becomes an empty range.
        let span = |part: &[u8]| {
            (part.as_ptr() as usize)
                .checked_sub(start)
                .filter(|at| !part.is_empty() && at + part.len() <= len)
                .map_or(0..0, |at| at..at + part.len())
        };
        let reason = span(parsed.reason.unwrap_or("").as_bytes());
        let mut fields = Vec::with_capacity(parsed.headers.len());
        let mut message = Message::default();
        for f in parsed.headers.iter() {
            message.observe(f.name.as_bytes(), f.value)?;
            fields.push((span(f.name.as_bytes()), span(f.value)));
        }
        let framing = message.framing(status, method);
        if matches!(framing, Framing::Chunked(_)) {
            fields.retain(|(name, _)| !buf[name.clone()].eq_ignore_ascii_case(b"content-length"));
        }
        let keep_alive = match version {
            Version::HTTP_10 => message.keep_alive,
            _ => !message.close,
        } && framing != Framing::UntilClose;
        let raw = buf.split_to(len).freeze();
        return Ok(Some(Head {
            status,
            version,
            reason,
            raw,
            fields,
            framing,
            keep_alive,
        }));
    }
}

/// What a response's fields say about its framing and its connection, gathered in one pass.
#[derive(Default)]
struct Message {
    /// The last Transfer-Encoding field's last coding is chunked; `Some(false)`: another coding.
    chunked: Option<bool>,
    length: Option<u64>,
    close: bool,
    keep_alive: bool,
}

impl Message {
    fn observe(&mut self, name: &[u8], value: &[u8]) -> Result<(), ExchangeError> {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked must be the last coding (RFC 9112 §6.3); anything else is read to the close.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let digits = value.trim_ascii();
            let n: u64 = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| {
                    ExchangeError::Malformed(format!(
                        "content-length {:?}",
                        String::from_utf8_lossy(value)
                    ))
                })?;
            if self.length.is_some_and(|l| l != n) {
                return Err(ExchangeError::Malformed(
                    "conflicting content-length".into(),
                ));
            }
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    fn framing(&self, status: StatusCode, method: &Method) -> Framing {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Done;
        }
        match (self.chunked, self.length) {
            (Some(true), _) => Framing::Chunked(Chunk::Line(Line::Size)),
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(0)) => Framing::Done,
            (None, Some(n)) => Framing::Length(n),
        }
    }
}

/// A response body read straight off the target's connection. The request stays in flight
/// (and a drain waits) until it ends; then the connection goes back to the pool if it can carry
/// another request.
pub struct RawBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    guard: Option<InFlight>,
    /// Upper bound on waiting for the next piece.
    body_timeout: std::time::Duration,
    watch: Option<crate::stall::Watch>,
    /// An event stream: whatever ends it, it ends cleanly.
    stream: bool,
}

impl RawBody {
    pub fn new(
        conn: Conn,
        head: &Head,
        guard: InFlight,
        body_timeout: std::time::Duration,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            guard: Some(guard),
            body_timeout,
            watch: None,
            stream: head.is_event_stream(),
        };
        if body.framing == Framing::Done {
            body.finish();
        }
        body
    }

    /// The body was read to its end: the connection is reused if it can be.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let (Some(guard), Some(conn)) = (self.guard.take(), self.conn.take()) {
            conn.release(self.keep_alive, guard.backend());
        }
    }

    fn fail(&mut self, why: impl Into<String>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.framing = Framing::Done;
        let guard = self.guard.take();
        if self.stream {
            // An event stream ends at once, and cleanly: its client reconnects.
            if let Some(guard) = guard {
                guard.backend().metrics.long_ended(true);
            }
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Err(why.into().into())))
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = poll_data(conn, &mut this.framing, cx);
        if polled.is_pending() {
            let period = this.body_timeout;
            let why = ready!(crate::stall::poll_stop(
                &mut this.watch,
                this.guard.as_ref(),
                period,
                this.stream,
                cx
            ));
            return this.fail(why);
        }
        if let Some(watch) = &mut this.watch {
            watch.progressed();
        }
        match ready!(polled) {
            Ok(Some(data)) => {
                if this.framing == Framing::Done {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(why) => this.fail(why),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// The next piece of a response body off `conn`, as `framing` allows; `None` at its end.
pub(crate) async fn body_data(
    conn: &mut Conn,
    framing: &mut Framing,
) -> Result<Option<Bytes>, String> {
    std::future::poll_fn(|cx| poll_data(conn, framing, cx)).await
}

fn poll_data(
    conn: &mut Conn,
    framing: &mut Framing,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, String>> {
    loop {
        if *framing == Framing::Done {
            return Poll::Ready(Ok(None));
        }
        match decode(framing, &mut conn.buf) {
            Ok(Some(data)) => return Poll::Ready(Ok(Some(data))),
            Ok(None) if *framing == Framing::Done => return Poll::Ready(Ok(None)),
            Ok(None) => {}
            Err(why) => return Poll::Ready(Err(why)),
        }
        conn.buf.reserve(READ_CHUNK);
        let n = match ready!(poll_read_buf(&mut conn.stream, cx, &mut conn.buf)) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(format!("reading the target's response: {e}"))),
        };
        if n == 0 {
            if *framing == Framing::UntilClose {
                *framing = Framing::Done;
                return Poll::Ready(Ok(None));
            }
            return Poll::Ready(Err("the target closed the connection mid-body".into()));
        }
    }
}

fn poll_read_buf(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let dst = buf.spare_capacity_mut();
    let mut read = ReadBuf::uninit(dst);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    let n = read.filled().len();
    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Poll::Ready(Ok(n))
}

/// Takes the next piece of body data off `buf` as `framing` allows, moving `framing` along;
/// `None` when more bytes must be read first (or the body just ended).
pub(crate) fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
    loop {
        match *framing {
            Framing::Done => return Ok(None),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = left.min(buf.len() as u64);
                let data = buf.split_to(n as usize).freeze();
                *framing = if n == left {
                    Framing::Done
                } else {
                    Framing::Length(left - n)
                };
                return Ok(Some(data));
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = left.min(buf.len() as u64);
                let data = buf.split_to(n as usize).freeze();
                *framing = Framing::Chunked(if n == left {
                    Chunk::Line(Line::DataEnd)
                } else {
                    Chunk::Data(left - n)
                });
                return Ok(Some(data));
            }
            Framing::Chunked(Chunk::Line(line_kind)) => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_HEAD {
                        return Err("a chunk-size or trailer line is too long".into());
                    }
                    return Ok(None);
                };
                let line = buf.split_to(end + 2);
                let line = &line[..end];
                *framing = match line_kind {
                    Line::Size => {
                        let size = line.split(|&b| b == b';').next().unwrap_or_default();
                        let size = std::str::from_utf8(size)
                            .ok()
                            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                            .ok_or_else(|| {
                                format!("bad chunk size {:?}", String::from_utf8_lossy(line))
                            })?;
                        Framing::Chunked(if size == 0 {
                            Chunk::Line(Line::Trailer)
                        } else {
                            Chunk::Data(size)
                        })
                    }
                    Line::DataEnd if line.is_empty() => Framing::Chunked(Chunk::Line(Line::Size)),
                    Line::DataEnd => return Err("chunk data longer than its size".into()),
                    // Trailer fields are dropped: they would need a trailers frame of their own.
                    Line::Trailer if line.is_empty() => Framing::Done,
                    Line::Trailer => Framing::Chunked(Chunk::Line(Line::Trailer)),
                };
                if *framing == Framing::Done {
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> Result<Option<Head>, ExchangeError> {
        parse_head(&mut BytesMut::from(text), &method)
    }

    fn body_of(framing: Framing, wire: &[&[u8]]) -> Result<(Vec<u8>, Framing, usize), String> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire {
            buf.extend_from_slice(piece);
            while let Some(data) = decode(&mut framing, &mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        Ok((out, framing, buf.len()))
    }

    #[test]
    fn heads_give_their_framing_and_whether_the_connection_is_kept() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::GET)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(5), true)
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
            Method::GET,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(
            (h.framing, h.keep_alive),
            (Framing::Chunked(Chunk::Line(Line::Size)), false)
        );
        let h = head("HTTP/1.0 200 OK\r\n\r\n", Method::GET)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            (h.version, h.framing, h.keep_alive),
            (Version::HTTP_10, Framing::UntilClose, false)
        );
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.framing, Framing::Done);
        let h = head(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            Method::GET,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(
            (h.status, h.framing),
            (StatusCode::NO_CONTENT, Framing::Done)
        );
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .expect("valid")
            .is_none());
        assert!(head(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Method::GET
        )
        .is_err());
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).is_err());
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", Method::GET).is_err());
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Line(Line::Size)));
        assert!(
            !h.headers().expect("valid").contains_key("content-length"),
            "the length goes with chunked"
        );
        assert!(head("garbage\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn header_values_keep_their_bytes() {
        let h = head(
            "HTTP/1.1 200 OK\r\nX-A: one\r\nx-a: two\r\nServer: t\r\n\r\n",
            Method::GET,
        )
        .expect("valid")
        .expect("complete");
        let headers = h.headers().expect("valid");
        let a: Vec<&str> = headers
            .get_all("x-a")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(a, ["one", "two"]);
        assert_eq!(headers["server"], "t");
        assert_eq!(h.reason(), b"OK");
    }

    #[test]
    fn bodies_end_where_their_framing_says_whatever_the_reads() {
        let (data, end, left) = body_of(Framing::Length(5), &[b"he", b"llo"]).expect("ok");
        assert_eq!(
            (data.as_slice(), end, left),
            (&b"hello"[..], Framing::Done, 0)
        );
        // Split inside a size line, inside data, and inside the final CRLF.
        let wire: [&[u8]; 6] = [
            b"4\r\nwi",
            b"ki\r\n5;ext=1",
            b"\r\npedia\r\n",
            b"0\r\nTrailer: x\r",
            b"\n\r",
            b"\n",
        ];
        let (data, end, left) =
            body_of(Framing::Chunked(Chunk::Line(Line::Size)), &wire).expect("ok");
        assert_eq!(
            (data.as_slice(), end, left),
            (&b"wikipedia"[..], Framing::Done, 0)
        );
        // Bytes after the end are left for whoever reads next (and keep the connection out of the pool).
        let (_, end, left) = body_of(Framing::Length(2), &[b"okEXTRA"]).expect("ok");
        assert_eq!((end, left), (Framing::Done, 5));
        assert!(body_of(Framing::Chunked(Chunk::Line(Line::Size)), &[b"zz\r\n"]).is_err());
        assert!(body_of(
            Framing::Chunked(Chunk::Line(Line::Size)),
            &[b"2\r\nabc\r\n"]
        )
        .is_err());
    }

    proptest::proptest! {
        /// Any body, chunked any way and read in any pieces, comes out whole, and the decoder
        /// stops exactly at its end.
        #[test]
        fn chunked_bodies_survive_any_chunking_and_any_reads(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            chunk in 1usize..97,
            cuts in proptest::collection::vec(1usize..40, 1..30),
        ) {
            let mut wire = Vec::new();
            for piece in body.chunks(chunk) {
                wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut pieces = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < wire.len() {
                let n = cuts[i % cuts.len()].min(wire.len() - at);
                pieces.push(&wire[at..at + n]);
                at += n;
                i += 1;
            }
            let (data, end, left) = body_of(Framing::Chunked(Chunk::Line(Line::Size)), &pieces)
                .expect("valid chunked");
            proptest::prop_assert_eq!(data, body);
            proptest::prop_assert_eq!(end, Framing::Done);
            proptest::prop_assert_eq!(left, 0);
        }
    }
}
