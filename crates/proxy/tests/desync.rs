//! Request smuggling and response desync: a raw-socket target records the exact bytes it
//! receives, and each case in the tables below says what the client and the target must see.
//! docs/security.md has the same tables, with what nginx and HAProxy do where it differs.

mod support;

use std::sync::{Arc, Mutex};

use support::wire::{answers_or_garbage, Answer};
use support::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every byte the target received, over all its connections, health checks left out.
type Recorded = Arc<Mutex<Vec<u8>>>;

/// A target that records what it receives and answers each request head with `answer(head)`;
/// health checks get a plain 200.
async fn target(answer: fn(&[u8]) -> Vec<u8>) -> (String, Recorded) {
    let recorded: Recorded = Arc::default();
    let r = recorded.clone();
    let addr = support::each_connection(move |mut s| {
        let r = r.clone();
        async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Health checks come on connections of their own: those are not recorded.
            let mut health = None;
            loop {
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = seen.drain(..end + 4).collect();
                    let reply = if head.starts_with(b"GET /health ") {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec()
                    } else {
                        answer(&head)
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let data = &buf[..n];
                        let is_health = *health.get_or_insert(data.starts_with(b"GET /health "));
                        if !is_health {
                            r.lock().expect("lock").extend_from_slice(data);
                        }
                        seen.extend_from_slice(data);
                    }
                }
            }
        }
    })
    .await;
    (addr.to_string(), recorded)
}

fn ok(_: &[u8]) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
}

async fn stack_with(answer: fn(&[u8]) -> Vec<u8>) -> (Stack, Recorded) {
    let (addr, recorded) = target(answer).await;
    let stack = Stack::one_worker().await;
    stack.group("web", 100);
    stack.add_healthy("web", &addr).await;
    recorded.lock().expect("lock").clear();
    (stack, recorded)
}

/// Writes `request`, reads until the proxy closes (or a few seconds pass), splits answers.
async fn send(stack: &Stack, request: &[u8], heads: &[usize]) -> Vec<Answer> {
    let mut s = tokio::net::TcpStream::connect(stack.addr)
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut wire = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut wire)).await;
    answers_or_garbage(&wire, heads)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a request case must come to.
enum Expect {
    /// The proxy answers this status itself; the target sees nothing at all.
    Refused(u16),
    /// Forwarded: the target's bytes contain each of these and none of `absent`.
    Forwarded {
        has: &'static [&'static str],
        absent: &'static [&'static str],
    },
}

struct RequestCase {
    name: &'static str,
    wire: &'static [u8],
    expect: Expect,
}

/// Requests a front end and a back end could frame differently. Each is followed on the same
/// connection by nothing: a smuggled request would show in the target's bytes.
const REQUESTS: &[RequestCase] = &[
    RequestCase {
        name: "Content-Length and Transfer-Encoding together",
        wire: b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "two different Content-Lengths",
        wire: b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "a Content-Length that is not digits",
        wire: b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "Transfer-Encoding other than chunked last",
        wire: b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "obs-fold continuation line",
        wire: b"GET /a HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "space before the colon",
        wire: b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "NUL in a field value",
        wire: b"GET /a HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
        expect: Expect::Refused(400),
    },
    RequestCase {
        name: "bare LF line ends",
        wire: b"GET /bare HTTP/1.1\nHost: a\nConnection: close\n\n",
        expect: Expect::Forwarded {
            has: &["GET /bare HTTP/1.1\r\n", "host: a\r\n"],
            absent: &["\n\n"],
        },
    },
    RequestCase {
        name: "chunked body with a chunk extension and trailer",
        wire: b"POST /ext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;name=v\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n",
        expect: Expect::Forwarded {
            has: &["POST /ext HTTP/1.1\r\n", "hi"],
            absent: &["smuggled"],
        },
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_framed_one_way_or_refused() {
    let (stack, recorded) = stack_with(ok).await;
    let mut failures = Vec::new();
    for case in REQUESTS {
        recorded.lock().expect("lock").clear();
        let got = send(&stack, case.wire, &[]).await;
        let seen = text(&recorded.lock().expect("lock"));
        let status = got.first().map(|a| a.status);
        let fine = match &case.expect {
            Expect::Refused(code) => status == Some(*code) && seen.is_empty(),
            Expect::Forwarded { has, absent } => {
                status == Some(200)
                    && has.iter().all(|h| seen.contains(h))
                    && !absent.iter().any(|a| seen.contains(a))
            }
        };
        if !fine {
            failures.push(format!(
                "{}: client got {:?}, target saw {seen:?}",
                case.name,
                got.iter().map(|a| a.status).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Target answers by path for the response cases; `/second` is the honest answer every case's
/// follow-up request must get, whatever the first answer left on the target's connection.
fn responses(head: &[u8]) -> Vec<u8> {
    let head = text(head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let answer: &[u8] = match path.as_str() {
        "/second" => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
        "/head-body" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        "/204-body" => b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello",
        "/304-body" => b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\nhello",
        "/extra" => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
        }
        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "/early" => {
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        }
        "/switch" => {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        }
        "/both" => {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        }
        "/fold" => b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\nok",
        "/bad-length" => b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        "/no-reason" => b"HTTP/1.1 200\r\nx-empty:\r\ncontent-length: 2\r\n\r\nok",
        _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    };
    answer.to_vec()
}

struct ResponseCase {
    name: &'static str,
    path: &'static str,
    head_request: bool,
    /// What the client gets for the first request: status, and body when not a HEAD.
    status: u16,
    body: &'static [u8],
}

/// Answers a target could frame differently from the proxy. After each, a second request on
/// the same client connection must get the honest `/second` answer: nothing the first answer
/// left on a pooled target connection may be read as the next one.
const RESPONSES: &[ResponseCase] = &[
    ResponseCase {
        name: "a body sent with the answer to a HEAD",
        path: "/head-body",
        head_request: true,
        status: 200,
        body: b"",
    },
    ResponseCase {
        name: "a body sent with a 204",
        path: "/204-body",
        head_request: false,
        status: 204,
        body: b"",
    },
    ResponseCase {
        name: "a body sent with a 304",
        path: "/304-body",
        head_request: false,
        status: 304,
        body: b"",
    },
    ResponseCase {
        name: "bytes past the end of the body (a forged next answer)",
        path: "/extra",
        head_request: false,
        status: 200,
        body: b"ok",
    },
    ResponseCase {
        name: "an unasked 100 Continue before the answer",
        path: "/continue",
        head_request: false,
        status: 200,
        body: b"ok",
    },
    ResponseCase {
        name: "103 Early Hints before the answer",
        path: "/early",
        head_request: false,
        status: 200,
        body: b"ok",
    },
    ResponseCase {
        name: "101 to a request that asked for no upgrade",
        path: "/switch",
        head_request: false,
        status: 502,
        body: b"502 Bad Gateway (target-reset)\n",
    },
    ResponseCase {
        name: "Content-Length and Transfer-Encoding together",
        path: "/both",
        head_request: false,
        status: 200,
        body: b"ok",
    },
    ResponseCase {
        name: "obs-fold in a response field",
        path: "/fold",
        head_request: false,
        status: 502,
        body: b"502 Bad Gateway (target-reset)\n",
    },
    ResponseCase {
        name: "a status line without a reason phrase, an empty field",
        path: "/no-reason",
        head_request: false,
        status: 200,
        body: b"ok",
    },
    ResponseCase {
        name: "a list as Content-Length",
        path: "/bad-length",
        head_request: false,
        status: 502,
        body: b"502 Bad Gateway (target-reset)\n",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_framed_one_way_and_never_leak_into_the_next() {
    let (stack, _) = stack_with(responses).await;
    let mut failures = Vec::new();
    for case in RESPONSES {
        // The proxy's own path (bodiless), then hyper's (a request with a body).
        for with_body in [false, true] {
            if with_body && case.head_request {
                continue;
            }
            let method = if case.head_request {
                "HEAD"
            } else if with_body {
                "POST"
            } else {
                "GET"
            };
            let body = if with_body {
                "Content-Length: 1\r\n\r\nx"
            } else {
                "\r\n"
            };
            let request = format!(
                "{method} {} HTTP/1.1\r\nHost: a\r\n{body}GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                case.path
            );
            let heads: &[usize] = if case.head_request { &[0] } else { &[] };
            let got = send(&stack, request.as_bytes(), heads).await;
            let summary: Vec<(u16, String)> =
                got.iter().map(|a| (a.status, text(&a.body))).collect();
            let first_ok = got
                .first()
                .is_some_and(|a| a.status == case.status && a.body == case.body);
            let second_ok = got
                .get(1)
                .is_some_and(|a| a.status == 200 && a.body == b"second");
            if !(first_ok && second_ok && got.len() == 2) {
                failures.push(format!("{} ({method}): client got {summary:?}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
