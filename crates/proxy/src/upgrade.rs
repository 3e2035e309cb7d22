//! Upgraded connections (WebSocket and other HTTP/1.1 upgrades): bytes both ways until either side
//! closes, or until a drain deadline, when each side gets a WebSocket close frame first.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::backend::InFlight;

/// Close frame, status 1001 "going away", as a server sends it (unmasked).
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
/// The same as a client must send it: masked, here with a zero key.
const CLOSE_TO_TARGET: [u8; 8] = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9];

pub async fn tunnel(client: OnUpgrade, target: OnUpgrade, guard: InFlight) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut target = TokioIo::new(target);
    let cut = guard.backend().cut.clone();
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut target) => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        _ = cut.cancelled() => {
            let _ = client.write_all(&CLOSE_TO_CLIENT).await;
            let _ = target.write_all(&CLOSE_TO_TARGET).await;
            let _ = client.shutdown().await;
            let _ = target.shutdown().await;
        }
    }
    drop(guard);
}
