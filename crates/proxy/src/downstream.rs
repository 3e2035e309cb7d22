//! The client side of HTTP/1.1 connections: requests without a body are read, forwarded and
//! answered by the proxy itself; the first request that needs more hands the connection to hyper.
//!
//! Most requests a load balancer sees are GETs without a body. For them a general-purpose server
//! builds a header map, a request, a boxed service future and a response with another header map,
//! only for the proxy to turn them back into bytes for the target and the client. Here the
//! request head is parsed in place, the target's head is written from the client's bytes plus
//! the proxy's own fields, and the answer goes back the same way: no header map on either side.
//!
//! Anything else (a body, `Expect`, an upgrade, HTTP/2's preface, an absolute-form target, a
//! malformed or oversized head) is left unread and the connection, with the bytes already read,
//! goes to hyper for the rest of its life: hyper answers the errors and handles the protocols,
//! exactly as it does for connections that start that way.

use std::cell::RefCell;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderName;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::forward::{is_idempotent, Proxy, ProxyError, Refusal};
use crate::headers::{Client, Rules, HOP_BY_HOP, PROXY_ERROR_FIELD};
use crate::stall::Watch;
use crate::upstream::{self, head_ends, Framing};

/// The largest request head accepted (64 KiB): a larger one goes to hyper, whose buffer has
/// the same bound, and is answered 431.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields read here (hyper's default); more go to hyper, which answers 431.
const MAX_HEADERS: usize = 100;
/// How much is read from the client at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Body bytes gathered before they are written to the client.
const FLUSH_AT: usize = 64 * 1024;

/// How a connection left this path.
pub enum Outcome {
    /// It is finished: either side closed it, it sat idle past the header timeout, or the
    /// listener is shutting down.
    Closed,
    /// hyper serves the rest of it, starting with these bytes (a request not taken here).
    Handoff(Bytes),
}

/// A listener's shutdown as its connections see it.
#[derive(Clone, Default)]
pub struct Closing {
    token: CancellationToken,
    /// Set before the token is cancelled: read once per request, where the token's own check
    /// takes a lock.
    flag: Arc<AtomicBool>,
}

impl Closing {
    pub fn close(&self) {
        self.flag.store(true, Ordering::Relaxed);
        self.token.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    pub async fn closed(&self) {
        self.token.cancelled().await
    }
}

/// A request taken on this path.
struct Taken {
    /// Length of its head in the client's buffer.
    len: usize,
    method: Method,
    /// The client keeps the connection open after the answer.
    keep_alive: bool,
    /// The client speaks HTTP/1.0: no chunked answers.
    http10: bool,
}

enum Parsed {
    Taken(Taken),
    Partial,
    Handoff,
    /// Refused outright: this answer, then the connection closes.
    Refused(Refusal),
}

/// Serves requests on a client connection until it ends or a request needs hyper.
pub async fn serve<IO>(
    io: &mut IO,
    proxy: &Proxy,
    client: &Client,
    header_timeout: Duration,
    closing: &Closing,
) -> std::io::Result<Outcome>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut head = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(1024);
    let closed = closing.closed();
    tokio::pin!(closed);
    let timeout = tokio::time::sleep(header_timeout);
    tokio::pin!(timeout);
    loop {
        timeout
            .as_mut()
            .reset(tokio::time::Instant::now() + header_timeout);
        // After a head was found incomplete: how far the buffer holds no blank line.
        let mut scanned: Option<usize> = None;
        let taken = loop {
            if !buf.is_empty() {
                if scanned.is_none_or(|from| head_ends(&buf, from)) {
                    head.clear();
                    match parse(&buf, proxy, client, &mut head) {
                        Parsed::Taken(taken) => break taken,
                        Parsed::Handoff => return Ok(Outcome::Handoff(buf.split().freeze())),
                        Parsed::Refused(refusal) => {
                            out.clear();
                            refused(&mut out, refusal);
                            send(io, &out).await?;
                            let _ = io.shutdown().await;
                            return Ok(Outcome::Closed);
                        }
                        Parsed::Partial => {}
                    }
                }
                if buf.len() >= MAX_HEAD {
                    return Ok(Outcome::Handoff(buf.split().freeze()));
                }
                scanned = Some(buf.len());
            }
            buf.reserve(READ_CHUNK);
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => if read? == 0 {
                    return Ok(Outcome::Closed);
                },
                // Between requests a shutdown closes the connection; a head half-read is
                // given until the header timeout.
                _ = &mut closed, if buf.is_empty() => return Ok(Outcome::Closed),
                _ = &mut timeout => {
                    tracing::debug!(peer = %client.ip, "no whole request head within the header timeout");
                    return Ok(Outcome::Closed);
                }
            }
        };
        buf.advance(taken.len);
        let keep_alive = answer(io, &mut buf, proxy, &taken, &head, &mut out, closing).await?;
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ok(Outcome::Closed);
        }
    }
}

/// Forwards one request and writes its answer; whether the connection stays open.
async fn answer<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    proxy: &Proxy,
    taken: &Taken,
    head: &[u8],
    out: &mut Vec<u8>,
    closing: &Closing,
) -> std::io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut conn, answer, guard) = match proxy.exchange_bodiless(head, &taken.method).await {
        Ok(exchanged) => exchanged,
        Err(e) => {
            let keep_alive = taken.keep_alive && !closing.is_closing();
            out.clear();
            error_response(
                out,
                e,
                taken.method == Method::HEAD,
                keep_alive,
                taken.http10,
            );
            send(io, out).await?;
            return Ok(keep_alive);
        }
    };
    let mut framing = answer.framing;
    // An HTTP/1.0 client cannot take chunks: a body of unknown length ends with the connection.
    let delimited = matches!(framing, Framing::Chunked(_) | Framing::UntilClose);
    let chunked = delimited && !taken.http10;
    let keep_alive = taken.keep_alive && !closing.is_closing() && !(delimited && taken.http10);
    out.clear();
    response_head(
        out,
        &answer,
        &proxy.rules.response,
        keep_alive,
        taken.http10,
    );
    // Nothing has reached the client yet: a body that breaks now can still be answered 502.
    let mut sent = false;
    // An event stream ends cleanly whatever ends it (a drain, its deadline, the target dying):
    // its client reconnects where it left off.
    let stream = answer.is_event_stream();
    let end_stream = |out: &mut Vec<u8>| {
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        guard.backend().metrics.long_ended(true);
    };
    let mut watch: Option<Watch> = None;
    loop {
        // What is already read goes out with what came before it, in one write.
        loop {
            match upstream::decode(&mut framing, conn.buffered()) {
                Ok(Some(data)) => {
                    frame(out, &data, chunked);
                    if out.len() >= FLUSH_AT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(why) if stream && sent => {
                    tracing::debug!(target = %guard.backend().key, %why, "event stream broke; ending it cleanly");
                    end_stream(out);
                    send(io, out).await?;
                    return Ok(false);
                }
                Err(why) => {
                    let backend = guard.backend();
                    backend.metrics.broken_body();
                    proxy.registry.passive(backend, false);
                    if sent {
                        return Err(broken(backend.key.as_str(), why));
                    }
                    tracing::debug!(target = %backend.key, %why, "target's body is malformed; answering 502");
                    out.clear();
                    // The target connection is not reused; the client's may be.
                    let keep_alive = keep_alive && !closing.is_closing();
                    error_response(
                        out,
                        ProxyError::TargetReset,
                        taken.method == Method::HEAD,
                        keep_alive,
                        taken.http10,
                    );
                    send(io, out).await?;
                    return Ok(keep_alive);
                }
            }
        }
        if framing == Framing::Done {
            if chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            send(io, out).await?;
            conn.release(answer.keep_alive, guard.backend());
            return Ok(keep_alive);
        }
        if !out.is_empty() {
            send(io, out).await?;
            out.clear();
            sent = true;
        }
        let backend = guard.backend();
        let watch = watch.get_or_insert_with(|| match stream {
            true => Watch::for_stream(proxy.body_timeout, backend),
            false => Watch::new(proxy.body_timeout, &backend.cut),
        });
        // Waiting on the target, the client is watched too: one that leaves ends the exchange
        // at once instead of when the target next sends something.
        let next = tokio::select! {
            biased;
            data = upstream::body_data(&mut conn, &mut framing) => data,
            why = std::future::poll_fn(|cx| watch.poll_stop(cx)) => Err(why),
            gone = client_gone(io, buf) => {
                tracing::debug!(target = %backend.key, why = %gone, "client left mid-answer");
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, gone));
            }
        };
        match next {
            Ok(Some(data)) => {
                watch.progressed();
                frame(out, &data, chunked);
            }
            Ok(None) => {}
            Err(why) if stream => {
                tracing::debug!(target = %backend.key, %why, "ending the event stream cleanly");
                end_stream(out);
                send(io, out).await?;
                return Ok(false);
            }
            Err(why) => {
                backend.metrics.broken_body();
                proxy.registry.passive(backend, false);
                return Err(broken(backend.key.as_str(), why));
            }
        }
    }
}

/// Resolves when the client has closed its side (or its connection broke); bytes it sends
/// meanwhile (pipelined requests) are kept in `buf`, up to the head limit.
async fn client_gone<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> String {
    loop {
        if buf.len() >= MAX_HEAD {
            return std::future::pending().await;
        }
        buf.reserve(READ_CHUNK);
        match io.read_buf(buf).await {
            Ok(0) => return "the client closed the connection".into(),
            Ok(_) => {}
            Err(e) => return format!("the client's connection broke: {e}"),
        }
    }
}

/// Writes `out` and flushes it: the `AsyncWrite` contract lets a stream (TLS) hold written
/// bytes until flushed.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, out: &[u8]) -> std::io::Result<()> {
    io.write_all(out).await?;
    io.flush().await
}

/// The target broke its response off after the head went out: all the client can be told is
/// that the connection ends.
fn broken(target: &str, why: String) -> std::io::Error {
    tracing::debug!(target, %why, "target broke off its response body");
    std::io::Error::other(why)
}

fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Parses a request head off the front of `buf`; if this path takes it, writes the head that
/// goes to the target into `head`.
fn parse(buf: &[u8], proxy: &Proxy, client: &Client, head: &mut Vec<u8>) -> Parsed {
    // Left uninitialised, as in `upstream::parse_head`.
    let mut fields = [std::mem::MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handoff,
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Handoff;
    };
    // Both framings at once is the smuggling pair; hyper would drop the length and read chunks,
    // which is safe, but nothing is gained by accepting it (nginx refuses it too).
    let has = |field: &[u8]| {
        req.headers
            .iter()
            .any(|f| f.name.as_bytes().eq_ignore_ascii_case(field))
    };
    if has(b"content-length") && has(b"transfer-encoding") {
        return Parsed::Refused(Refusal::TwoFramings);
    }

    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(method) if is_idempotent(&method) => method,
        _ => return Parsed::Handoff,
    };
    // Origin-form only: an absolute-form target is rewritten by the general path.
    if !path.starts_with('/') {
        return Parsed::Handoff;
    }
    let http10 = version == 0;
    let mut connection: Vec<&[u8]> = Vec::new();
    let (mut close, mut keep) = (false, false);
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if f.value.trim_ascii() != b"0" {
                return Parsed::Handoff;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Parsed::Handoff;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in f.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
                connection.push(token);
            }
        }
    }
    let keep_alive = if http10 { keep } else { !close };

    let rules = &proxy.rules.request;
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let (mut host, mut prior_for, mut has_id) = (None, None, false);
    for f in req.headers.iter() {
        let name = f.name.as_bytes();
        // The proxy's own fields first: a `Connection` token never removes them.
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                // Two Hosts: the general path refuses it with a 400.
                return Parsed::Handoff;
            }
            host = Some(f.value);
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            prior_for = prior_for.or(Some(f.value));
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
        {
            continue;
        }
        if is_hop_by_hop(name) || connection.iter().any(|t| t.eq_ignore_ascii_case(name)) {
            continue;
        }
        has_id |= name.eq_ignore_ascii_case(b"x-request-id");
        if !ruled(rules, name) {
            field(head, name, f.value);
        }
    }
    // The proxy's own fields, then the stack file's rules over them, as on the general path
    // (`headers::add_forwarded`, then `headers::apply`).
    if let Some(host) = host {
        if !ruled(rules, b"host") {
            field(head, b"host", host);
        }
    }
    if !ruled(rules, b"x-forwarded-for") {
        head.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prior) = prior_for {
            head.extend_from_slice(prior);
            head.extend_from_slice(b", ");
        }
        head.extend_from_slice(client.ip_header.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !ruled(rules, b"x-forwarded-proto") {
        field(head, b"x-forwarded-proto", client.scheme.as_bytes());
    }
    if let Some(host) = host {
        if !ruled(rules, b"x-forwarded-host") {
            field(head, b"x-forwarded-host", host);
        }
    }
    if !has_id && !ruled(rules, b"x-request-id") {
        field(head, b"x-request-id", &crate::headers::request_id());
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        field(head, name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    Parsed::Taken(Taken {
        len,
        method,
        keep_alive,
        http10,
    })
}

/// [`parse`] for the fuzz targets: the length taken, when this path takes the head.
#[cfg(test)]
pub(crate) fn parse_for_fuzz(
    buf: &[u8],
    proxy: &Proxy,
    client: &Client,
    head: &mut Vec<u8>,
) -> Option<usize> {
    match parse(buf, proxy, client, head) {
        Parsed::Taken(taken) => Some(taken.len),
        _ => None,
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether a rule removes or replaces fields of this name.
fn ruled(rules: &Rules, name: &[u8]) -> bool {
    let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
    rules.remove.iter().any(is) || rules.set.iter().any(|(n, _)| is(n))
}

/// The client's response head: the target's status and fields, less hop-by-hop ones, with the
/// framing this connection uses and the stack file's response rules.
fn response_head(
    out: &mut Vec<u8>,
    answer: &upstream::Head,
    rules: &Rules,
    keep_alive: bool,
    http10: bool,
) {
    status_line(out, answer.status, answer.reason());
    let mut connection: Vec<&[u8]> = Vec::new();
    let mut has_date = false;
    for (name, value) in answer.fields() {
        if name.eq_ignore_ascii_case(b"connection") {
            connection.extend(value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        }
        has_date |= name.eq_ignore_ascii_case(b"date");
    }
    let framing = answer.framing;
    for (name, value) in answer.fields() {
        if is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(PROXY_ERROR_FIELD.as_bytes())
            || connection.iter().any(|t| t.eq_ignore_ascii_case(name))
            || ruled(rules, name)
        {
            continue;
        }
        // The length is the proxy's to state when it frames the body; a body-less answer
        // (HEAD, 304) keeps the one it describes.
        if framing != Framing::Done && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        field(out, name, value);
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked(_) | Framing::UntilClose if !http10 => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    if !has_date {
        date(out);
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    connection_field(out, keep_alive, http10);
    out.extend_from_slice(b"\r\n");
}

/// The answer to a request refused outright; the connection closes after it.
fn refused(out: &mut Vec<u8>, refusal: Refusal) {
    let text = refusal.text();
    status_line(out, refusal.status(), b"");
    field(out, b"content-type", b"text/plain; charset=utf-8");
    let _ = write!(out, "content-length: {}\r\n", text.len());
    date(out);
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// A 502/503/504 the proxy answers itself, as [`ProxyError::response`] does on the general path.
fn error_response(
    out: &mut Vec<u8>,
    error: ProxyError,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
) {
    let status = error.status();
    let text = error.text();
    status_line(out, status, b"");
    field(out, b"x-cutover-error", error.reason().as_bytes());
    field(out, b"content-type", b"text/plain; charset=utf-8");
    let _ = write!(out, "content-length: {}\r\n", text.len());
    date(out);
    connection_field(out, keep_alive, http10);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(text.as_bytes());
    }
}

fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match (reason, status.canonical_reason()) {
        (b"", Some(canonical)) => out.extend_from_slice(canonical.as_bytes()),
        (reason, _) => out.extend_from_slice(reason),
    }
    out.extend_from_slice(b"\r\n");
}

fn connection_field(out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    match (keep_alive, http10) {
        (false, _) => out.extend_from_slice(b"connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"connection: keep-alive\r\n"),
        (true, false) => {}
    }
}

thread_local! {
    /// The `date` field for the current second, made once a second per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            cached.1 = format!("date: {}\r\n", httpdate::fmt_http_date(now)).into_bytes();
            cached.0 = second;
        }
        out.extend_from_slice(&cached.1);
    });
}

/// A connection handed to hyper: the bytes this path read and did not use come first.
pub struct Prefixed<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Self { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let taken = self.prefix.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::HeaderRules;
    use crate::registry::Registry;
    use http::HeaderValue;

    fn taken(request: &str, rules: HeaderRules) -> Option<(Taken, String)> {
        let proxy = Proxy::new(Registry::new(), rules);
        let client = Client::new("192.0.2.7".parse().expect("ip"), "https");
        let mut head = Vec::new();
        match parse(request.as_bytes(), &proxy, &client, &mut head) {
            Parsed::Taken(taken) => Some((taken, String::from_utf8(head).expect("ascii"))),
            Parsed::Partial | Parsed::Handoff | Parsed::Refused(_) => None,
        }
    }

    fn fields(head: &str) -> Vec<&str> {
        head.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[tokio::test]
    async fn the_targets_head_drops_hop_by_hop_fields_and_adds_the_proxys_own() {
        let (taken, head) = taken(
            "GET /a?b=1 HTTP/1.1\r\nHost: shop.test\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Request-Id: abc\r\nAccept: */*\r\n\r\n",
            HeaderRules::default(),
        )
        .expect("taken");
        assert!(taken.keep_alive && !taken.http10);
        assert!(head.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let mut got = fields(&head);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                "Accept: */*",
                "X-Request-Id: abc",
                "host: shop.test",
                "x-forwarded-for: 10.0.0.1, 192.0.2.7",
                "x-forwarded-host: shop.test",
                "x-forwarded-proto: https",
            ]
        );
    }

    #[tokio::test]
    async fn rules_apply_over_the_proxys_fields_as_on_the_general_path() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let rules = HeaderRules {
            request: Rules {
                set: vec![(name("x-team"), HeaderValue::from_static("payments"))],
                add: vec![(name("x-tag"), HeaderValue::from_static("lb"))],
                remove: vec![name("x-forwarded-for"), name("x-debug")],
            },
            ..HeaderRules::default()
        };
        let (_, head) = taken(
            "GET / HTTP/1.1\r\nX-Team: web\r\nX-Tag: client\r\nX-Debug: 1\r\n\r\n",
            rules,
        )
        .expect("taken");
        let got = fields(&head);
        assert!(
            got.contains(&"x-team: payments") && !got.contains(&"X-Team: web"),
            "{got:?}"
        );
        assert!(
            got.contains(&"X-Tag: client") && got.contains(&"x-tag: lb"),
            "{got:?}"
        );
        assert!(
            !got.iter()
                .any(|f| f.to_ascii_lowercase().starts_with("x-debug")),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|f| f.starts_with("x-forwarded-for")),
            "{got:?}"
        );
        assert!(
            !got.iter().any(|f| f.starts_with("x-forwarded-host")),
            "no host, none: {got:?}"
        );
        let id = got
            .iter()
            .find_map(|f| f.strip_prefix("x-request-id: "))
            .expect("an id");
        assert_eq!(id.len(), 32);
    }

    #[tokio::test]
    async fn only_bodiless_idempotent_origin_form_requests_are_taken() {
        let plain = HeaderRules::default;
        for handed in [
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://a.test/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                taken(handed, plain()).is_none(),
                "{handed:?} must go to hyper"
            );
        }
        let (t, _) =
            taken("DELETE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", plain()).expect("taken");
        assert_eq!(t.method, Method::DELETE);
        let (t, _) = taken("HEAD / HTTP/1.0\r\n\r\n", plain()).expect("taken");
        assert!(t.http10 && !t.keep_alive);
        let (t, _) = taken("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", plain()).expect("taken");
        assert!(!t.keep_alive);
        let (t, _) =
            taken("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", plain()).expect("taken");
        assert!(t.keep_alive);
    }

    #[test]
    fn a_head_ends_at_a_blank_line_found_in_the_new_bytes() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(head_ends(head, 0));
        // The blank line straddles what was scanned and what is new.
        assert!(head_ends(head, head.len() - 1));
        assert!(head_ends(head, head.len() - 2));
        assert!(head_ends(b"GET / HTTP/1.1\nHost: a\n\n", 20));
        assert!(!head_ends(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
        assert!(!head_ends(head, head.len()), "nothing new, nothing found");
    }

    #[test]
    fn answers_are_reframed_for_the_client() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\
               Connection: X-Hop\r\nX-Hop: 1\r\nServer: t\r\n\r\n"[..],
        );
        let head = upstream::parse_head(&mut buf, &Method::GET)
            .expect("valid")
            .expect("complete");
        let mut out = Vec::new();
        response_head(&mut out, &head, &Rules::default(), true, false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 200 Fine\r\n"), "{text}");
        assert!(text.contains("Server: t\r\n") && text.contains("transfer-encoding: chunked\r\n"));
        assert!(text.contains("\r\ndate: "), "{text}");
        for gone in ["Content-Length", "X-Hop", "Connection"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        let mut out = Vec::new();
        response_head(&mut out, &head, &Rules::default(), false, true);
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            !text.contains("transfer-encoding") && text.contains("connection: close\r\n"),
            "{text}"
        );
    }
}
