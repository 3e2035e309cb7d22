//! WebSocket and event-stream clients held open through a rolling deploy: each is closed
//! cleanly (a 1001 close frame, the end of its stream) before its instance stops, never reset,
//! and the deploy report and `cutover history` count them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use cutover_e2e::stack::{stack_file, Stack, RELEASE};

const CLIENTS: usize = 4;

/// How a long-lived client's connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// A close frame with this code.
    Close(u16),
    /// An event stream's last chunk.
    EndOfStream,
    /// Anything else: a reset, a connection ended mid-stream, a timeout.
    Broken(String),
}

fn websocket(addr: SocketAddr) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let (mut ws, _) =
            tungstenite::client(format!("ws://{addr}/ws"), stream).expect("websocket handshake");
        ws.send(tungstenite::Message::text("hello")).expect("send");
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(frame)) => {
                    return Ending::Close(frame.map_or(0, |f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(e) => return Ending::Broken(e.to_string()),
            }
        }
    })
}

fn event_stream(addr: SocketAddr) -> JoinHandle<Ending> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        s.write_all(b"GET /events?every=100ms HTTP/1.1\r\nHost: web\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Ok(_) if got.ends_with(b"0\r\n\r\n") => Ending::EndOfStream,
            Ok(_) => Ending::Broken(format!(
                "ended mid-stream: {:?}",
                String::from_utf8_lossy(&got[got.len().saturating_sub(60)..])
            )),
            Err(e) => Ending::Broken(e.to_string()),
        }
    })
}

#[test]
fn websockets_and_event_streams_are_closed_cleanly_through_a_rolling_deploy() {
    let file = stack_file(
        RELEASE,
        "desired = 2",
        "",
        "[deploy]\nmax_surge = 1\nmax_unavailable = 0\ndrain_timeout = \"2s\"",
    );
    let stack = Stack::start_from(&file, 2);
    let addr: SocketAddr = stack.0.addr.parse().expect("the stack's address");
    let clients: Vec<_> = (0..CLIENTS)
        .flat_map(|_| [websocket(addr), event_stream(addr)])
        .collect();
    stack.wait("every client to be connected", || {
        let open: u64 = stack.status()["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["upgraded"].as_u64().unwrap_or(0) + t["in_flight"].as_u64().unwrap_or(0))
            .sum();
        (open == 2 * CLIENTS as u64).then_some(())
    });
    let (code, out) = stack.deploy("v2", None);
    assert_eq!(code, 0, "{out}");
    let endings: Vec<Ending> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let clean = endings
        .iter()
        .filter(|e| matches!(e, Ending::Close(1001) | Ending::EndOfStream))
        .count();
    assert_eq!(clean, 2 * CLIENTS, "every one closed cleanly: {endings:?}");
    let deployment: serde_json::Value = serde_json::from_str(&out).expect("deploy report");
    assert_eq!(
        deployment["drains"]["closed"],
        2 * CLIENTS,
        "the report counts them: {deployment}"
    );
    assert_eq!(deployment["drains"]["cut"], 0, "{deployment}");
    let (code, history) = stack.run(&["history"]);
    assert_eq!(code, 0, "{history}");
    assert!(
        history.contains(&format!("{} long-lived closed cleanly", 2 * CLIENTS)),
        "{history}"
    );
    stack.stop_and_check_no_orphans();
}
