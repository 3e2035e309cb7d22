//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades): bytes both ways until either
//! side closes. A WebSocket is followed frame by frame (headers only, payloads pass untouched),
//! so the proxy can end it cleanly: when a drain winds it down, at the drain deadline, or when
//! its target dies, each side still there gets a close frame (1001, going away) between frames,
//! never a reset in the middle of one.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backend::InFlight;

/// Close frame, status 1001 "going away", as a server sends it (unmasked).
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
/// The same as a client must send it: masked, here with a zero key.
const CLOSE_TO_TARGET: [u8; 8] = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9];
/// How long a side that was sent a close frame may take to answer it before the connection
/// is closed anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long a frame in progress may take to finish before a wind-down closes anyway.
const FRAME_GRACE: Duration = Duration::from_secs(1);
const BUF: usize = 8 * 1024;

/// Where one direction of a WebSocket byte stream is: between frames, or inside one.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    head: [u8; 14],
    have: usize,
    payload: u64,
    /// A close frame went by: this direction is done, and no close is to be added.
    pub closed: bool,
}

impl Frames {
    pub fn between(&self) -> bool {
        self.have == 0 && self.payload == 0
    }

    /// Follows the bytes that just went by.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload > 0 {
                let n = self.payload.min(data.len() as u64);
                self.payload -= n;
                // n is at most data.len().
                data = &data[n as usize..];
                continue;
            }
            self.head[self.have] = data[0];
            self.have += 1;
            data = &data[1..];
            if self.have < 2 {
                continue;
            }
            let len7 = self.head[1] & 0x7f;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
            if self.have < 2 + ext + mask {
                continue;
            }
            self.payload = match ext {
                0 => u64::from(len7),
                2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                _ => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0xff; 8])),
            };
            if self.head[0] & 0x0f == 0x8 {
                self.closed = true;
            }
            self.have = 0;
        }
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its two sides ended it themselves.
    ByPeers,
    /// The proxy ended it with close frames between frames.
    Closed,
    /// The proxy had to end it without: inside a frame, or not a WebSocket.
    Broken,
}

pub async fn tunnel(client: OnUpgrade, target: OnUpgrade, guard: InFlight, websocket: bool) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    relay(TokioIo::new(client), TokioIo::new(target), guard, websocket).await;
}

/// Counts how a tunnel ended and lets go of it: from here it no longer holds a drain up, even
/// while the client is given a moment to answer a close frame.
fn done(guard: &mut Option<InFlight>, ended: Ended) -> Ended {
    if let Some(guard) = guard.take() {
        match ended {
            Ended::ByPeers => {}
            Ended::Closed => guard.backend().metrics.long_ended(true),
            Ended::Broken => guard.backend().metrics.long_ended(false),
        }
    }
    ended
}

/// Relays bytes both ways until the peers end it, the drain winds it down, its deadline cuts
/// it, or the target goes away.
pub(crate) async fn relay<C, T>(client: C, target: T, guard: InFlight, websocket: bool) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let backend = guard.backend().clone();
    let mut guard = Some(guard);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = tokio::io::split(target);
    let mut to_client = Frames::default();
    let mut to_target = Frames::default();
    let (mut cbuf, mut tbuf) = (vec![0u8; BUF], vec![0u8; BUF]);
    let wound = backend.clone().wound_down();
    tokio::pin!(wound);
    // Set once the proxy wants it closed: from then on it closes at the next frame boundary.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut client_done = false;
    loop {
        if let Some(since) = closing {
            let between = to_client.between() && to_target.between();
            if !websocket || between || since.elapsed() >= FRAME_GRACE {
                let ended = close(
                    &mut cw,
                    &mut tw,
                    websocket && between,
                    &to_client,
                    &to_target,
                )
                .await;
                done(&mut guard, ended);
                if ended == Ended::Closed {
                    linger(&mut cr).await;
                }
                let _ = cw.shutdown().await;
                return ended;
            }
        }
        tokio::select! {
            read = cr.read(&mut cbuf), if !client_done => match read {
                Ok(0) | Err(_) => {
                    // The client is gone: the target hears the same.
                    client_done = true;
                    let _ = tw.shutdown().await;
                    if !websocket || to_target.closed {
                        return done(&mut guard, Ended::ByPeers);
                    }
                }
                Ok(n) => {
                    if tw.write_all(&cbuf[..n]).await.is_err() {
                        closing.get_or_insert_with(tokio::time::Instant::now);
                    }
                    to_target.feed(&cbuf[..n]);
                }
            },
            read = tr.read(&mut tbuf) => match read {
                Ok(0) | Err(_) => {
                    // The target is gone (closed, or died): the client is told so between frames.
                    if client_done || !websocket || to_client.closed {
                        let _ = cw.shutdown().await;
                        return done(&mut guard, Ended::ByPeers);
                    }
                    if !to_client.between() {
                        let _ = cw.shutdown().await;
                        return done(&mut guard, Ended::Broken);
                    }
                    let written = cw.write_all(&CLOSE_TO_CLIENT).await.is_ok();
                    let ended = done(&mut guard, if written { Ended::Closed } else { Ended::Broken });
                    linger(&mut cr).await;
                    let _ = cw.shutdown().await;
                    return ended;
                }
                Ok(n) => {
                    if cw.write_all(&tbuf[..n]).await.is_err() {
                        // The client is gone.
                        let _ = tw.shutdown().await;
                        return done(&mut guard, Ended::ByPeers);
                    }
                    to_client.feed(&tbuf[..n]);
                }
            },
            _ = &mut wound, if closing.is_none() => {
                closing = Some(tokio::time::Instant::now());
            }
            _ = backend.cut.cancelled(), if closing.is_none() => {
                // The deadline: close at the next boundary, within the frame grace.
                closing = Some(tokio::time::Instant::now());
            }
            // A frame in progress that stops coming in: closed anyway once its grace is over.
            _ = grace_over(closing), if closing.is_some() => {}
        }
    }
}

async fn grace_over(closing: Option<tokio::time::Instant>) {
    if let Some(since) = closing {
        tokio::time::sleep_until(since + FRAME_GRACE).await;
    }
}

/// Ends a tunnel the proxy wants closed: close frames both ways when between frames.
async fn close<W, T>(
    cw: &mut W,
    tw: &mut T,
    frames: bool,
    to_client: &Frames,
    to_target: &Frames,
) -> Ended
where
    W: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
{
    if !frames {
        let _ = cw.shutdown().await;
        let _ = tw.shutdown().await;
        return Ended::Broken;
    }
    let mut written = true;
    if !to_client.closed {
        written = cw.write_all(&CLOSE_TO_CLIENT).await.is_ok();
    }
    if !to_target.closed {
        let _ = tw.write_all(&CLOSE_TO_TARGET).await;
    }
    let _ = tw.shutdown().await;
    if written {
        Ended::Closed
    } else {
        Ended::Broken
    }
}

/// Reads what the client still sends (its answering close frame) until it closes, for a moment
/// at most: a socket closed with data unread would answer the client with a reset.
async fn linger<R: AsyncRead + Unpin>(cr: &mut R) {
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], masked: bool, opcode: u8) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask | n as u8),
            n if n < 65536 => {
                f.push(mask | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_are_followed_whatever_the_pieces() {
        let mut wire = Vec::new();
        wire.extend(frame(b"hi", false, 1));
        wire.extend(frame(&vec![7u8; 300], true, 2));
        wire.extend(frame(&vec![9u8; 70_000], false, 2));
        for piece in [1usize, 3, 7, 1000, wire.len()] {
            let mut f = Frames::default();
            let mut boundaries = 0;
            for chunk in wire.chunks(piece) {
                f.feed(chunk);
                if f.between() {
                    boundaries += 1;
                }
            }
            assert!(f.between(), "ends between frames (pieces of {piece})");
            assert!(!f.closed);
            assert!(boundaries >= 1);
        }
        let mut f = Frames::default();
        let hi = frame(b"hi", false, 1);
        f.feed(&hi[..3]);
        assert!(!f.between(), "inside a frame");
        f.feed(&hi[3..]);
        assert!(f.between());
        f.feed(&frame(&[0x03, 0xE8], false, 8));
        assert!(f.closed, "a close frame went by");
    }
}
