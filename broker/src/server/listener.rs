//! The accept loop: one task per connection, at most `CONNECTIONS_MAX` at a
//! time. A connection beyond the limit is accepted and closed at once, so its
//! client learns immediately instead of waiting in the kernel's backlog, and
//! the backlog stays free for clients once connections are released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::connection::{self, Listener};
use crate::handler::Context;
use crate::limits::CONNECTIONS_MAX;

/// At most one warning about refused connections per this interval.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts connections on `socket` for `listener` until `shutdown`.
pub async fn run(
    socket: TcpListener,
    listener: Arc<Listener>,
    context: Arc<Context>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut refused = 0u64;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_INTERVAL) {
                warn!(%peer, limit = CONNECTIONS_MAX, refused, "connection limit reached; closing new connections");
                last_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let context = Arc::clone(&context);
        let listener = Arc::clone(&listener);
        let shutdown = shutdown.child_token();
        tokio::spawn(async move {
            connection::serve(context, listener, stream, shutdown).await;
            drop(permit);
        });
    }
}
