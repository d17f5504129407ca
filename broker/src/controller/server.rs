//! The controller listener of a voter: Raft RPCs from the other voters and
//! calls from brokers, one request at a time per connection. With `tls`,
//! every connection must present a certificate signed by the CA (only
//! brokers have one), within `AUTHENTICATION_TIMEOUT`.

use std::sync::Arc;

use strata_protocol::transport::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::rpc::{self, Request, Response};
use super::Controller;
use crate::limits;
use crate::security::tls::{Peers, Tls};

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    controller: Controller,
    tls: Option<Arc<Tls>>,
    shutdown: CancellationToken,
) {
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
                let tls = tls.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        result = connection(stream, tls, &controller) => {
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

async fn connection(
    stream: TcpStream,
    tls: Option<Arc<Tls>>,
    controller: &Controller,
) -> std::io::Result<()> {
    let stream = match tls {
        None => Stream::Tcp(stream),
        Some(tls) => {
            let peer = stream.peer_addr().ok();
            let handshake = tls.acceptor(Peers::Brokers).accept(stream);
            match tokio::time::timeout(limits::AUTHENTICATION_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => Stream::TlsServer(Box::new(stream)),
                Ok(Err(error)) => {
                    info!(?peer, %error, "controller listener: TLS handshake failed");
                    return Ok(());
                }
                Err(_elapsed) => return Ok(()),
            }
        }
    };
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
