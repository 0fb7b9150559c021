//! Accepting connections for the gRPC server. Every accepted socket gets `TCP_NODELAY`: the
//! server is fed through `serve_with_incoming`, where tonic's own `tcp_nodelay` never applies,
//! and without it a small answer waits for the caller's delayed ACK (40 ms on Linux) before it
//! leaves. With TLS, handshakes run off the accept loop, on the sockets accepted here.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream, wrappers::TcpListenerStream};
use tracing::{debug, info};

use crate::auth::ListenerTls;

/// The connections `listener` accepts, each with `TCP_NODELAY` set.
pub fn accept(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> + Send {
    TcpListenerStream::new(listener).map(|accepted| {
        let tcp = accepted?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    })
}

/// TLS over the `accepted` connections, each handshake in its own task with the configuration
/// in force when the connection arrived; failed handshakes (no trust, expired certificate,
/// plaintext) are dropped there.
pub fn tls(
    accepted: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    tls: Arc<ListenerTls>,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        tokio::pin!(accepted);
        loop {
            let next = tokio::select! {
                next = accepted.next() => next,
                () = tx.closed() => return,
            };
            let tcp = match next {
                None => return,
                Some(Ok(tcp)) => tcp,
                Some(Err(e)) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let peer = tcp.peer_addr().ok();
            let acceptor = TlsAcceptor::from(Arc::clone(&*tls.get()));
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => info!(?peer, error = %e, "TLS handshake refused"),
                    Err(_) => info!(?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 40 ms stall came back whenever an accepted socket lacked TCP_NODELAY; this checks
    /// the option itself, so it needs no clock. The TLS path takes its sockets from `accept`.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = accept(listener);
        tokio::pin!(accepted);
        for _ in 0..3 {
            let _client = TcpStream::connect(addr).await.unwrap();
            let server_side = accepted.next().await.unwrap().unwrap();
            assert!(
                server_side.nodelay().unwrap(),
                "TCP_NODELAY on the accepted socket"
            );
        }
    }
}
