//! The controller listener of a voter: Raft RPCs from the other voters and
//! calls from brokers, one request at a time per connection.

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::rpc::{self, Request, Response};
use super::Controller;
use crate::limits;

/// Serves `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, controller: Controller, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let controller = controller.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        result = connection(stream, &controller) => {
                            if let Err(error) = result {
                                debug!(%peer, %error, "controller connection closed");
                            }
                        }
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                debug!(%error, "controller listener accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, controller: &Controller) -> std::io::Result<()> {
    let mut channel = rpc::Channel::new(stream);
    while let Some(request) = channel.read::<Request>().await? {
        let response =
            tokio::time::timeout(limits::CONTROLLER_CALL_TIMEOUT, controller.handle(request))
                .await
                .unwrap_or_else(|_| {
                    Response::Failed(format!(
                        "no answer within {:?}",
                        limits::CONTROLLER_CALL_TIMEOUT
                    ))
                });
        channel.write(&response).await?;
    }
    Ok(())
}
