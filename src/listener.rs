//! Accepting connections for the gRPC server, within limits anyone who can reach the port could
//! otherwise exhaust:
//!
//! - at most `max_connections` open at once: the accept loop takes a slot before it accepts,
//!   so beyond the limit new connections wait in the kernel's backlog and cost the process no
//!   file descriptor;
//! - a connection must send its first request within `first_request` of being accepted (TLS
//!   handshake included), and is closed after `idle` without a request;
//! - accept errors for want of descriptors (EMFILE, ENFILE) back off instead of spinning, with
//!   one WARN per burst and its count;
//! - every socket gets `TCP_NODELAY`: the server is fed through `serve_with_incoming`, where
//!   tonic's own `tcp_nodelay` never applies, and without it a small answer waits for the
//!   caller's delayed ACK (40 ms on Linux) before it leaves.
//!
//! With TLS, handshakes run off the accept loop, on the sockets accepted here, each bounded by
//! a timeout. Requests mark their connection as in use through [`Connections::layer`].

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    body::Body,
    codegen::http,
    transport::server::{Connected, TcpConnectInfo, TlsConnectInfo},
};
use tracing::{debug, info, warn};

use crate::auth::ListenerTls;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first and the longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The limits on connections, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// From accept to the first request.
    pub first_request: Duration,
    /// Between requests.
    pub idle: Duration,
}

/// The open connections: their slots, and whether each has had a request lately.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    slots: Arc<Semaphore>,
    limits: Limits,
    /// Set by a request on the connection from that address; cleared by its timer.
    used: Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>,
}

impl Connections {
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
                limits,
                used: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.limits.max_connections.max(1) - self.inner.slots.available_permits()
    }

    /// A layer that marks the connection of every request as in use.
    pub fn layer(
        &self,
    ) -> tower::util::MapRequestLayer<
        impl Fn(http::Request<Body>) -> http::Request<Body> + Clone + use<>,
    > {
        let this = self.clone();
        tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
            let extensions = request.extensions();
            let remote = extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
                .or_else(|| {
                    extensions
                        .get::<TcpConnectInfo>()
                        .and_then(TcpConnectInfo::remote_addr)
                });
            if let Some(remote) = remote {
                let used = this.inner.used.lock().expect("connections poisoned");
                if let Some(flag) = used.get(&remote) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
            request
        })
    }

    fn guard(&self, tcp: TcpStream, remote: SocketAddr, slot: OwnedSemaphorePermit) -> Guarded {
        let used = Arc::new(AtomicBool::new(false));
        self.inner
            .used
            .lock()
            .expect("connections poisoned")
            .insert(remote, Arc::clone(&used));
        Guarded {
            inner: tcp,
            remote,
            used,
            ever_used: false,
            timer: Box::pin(tokio::time::sleep(self.inner.limits.first_request)),
            connections: Arc::clone(&self.inner),
            _slot: slot,
        }
    }
}

/// An accepted socket that holds a connection slot, and closes itself when no request came
/// within its time.
pub struct Guarded {
    inner: TcpStream,
    remote: SocketAddr,
    used: Arc<AtomicBool>,
    ever_used: bool,
    timer: Pin<Box<Sleep>>,
    connections: Arc<Inner>,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    /// Whether the connection has had no request in its time; re-arms the timer otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if !self.used.swap(false, Ordering::Relaxed) {
                return true;
            }
            self.ever_used = true;
            let next = Instant::now() + self.connections.limits.idle;
            self.timer.as_mut().reset(next);
        }
        false
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let mut used = self.connections.used.lock().expect("connections poisoned");
        if used
            .get(&self.remote)
            .is_some_and(|f| Arc::ptr_eq(f, &self.used))
        {
            used.remove(&self.remote);
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            let why = if self.ever_used { "idle" } else { "no request" };
            debug!(remote = %self.remote, why, "closing a connection");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections `listener` accepts, within the limits of `connections`.
pub fn accept(
    listener: TcpListener,
    connections: Connections,
) -> ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut failed = 0u64;
        let mut backoff = ACCEPT_BACKOFF.0;
        loop {
            let slot = tokio::select! {
                slot = Arc::clone(&connections.inner.slots).acquire_owned() => slot,
                () = tx.closed() => return,
            };
            let Ok(slot) = slot else { return };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((tcp, remote)) => {
                    if failed > 0 {
                        info!(failed, "accepting connections again");
                        failed = 0;
                        backoff = ACCEPT_BACKOFF.0;
                    }
                    if let Err(e) = tcp.set_nodelay(true) {
                        debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    let guarded = connections.guard(tcp, remote, slot);
                    if tx.send(Ok(guarded)).await.is_err() {
                        return;
                    }
                }
                Err(e) if out_of_descriptors(&e) => {
                    if failed == 0 {
                        warn!(error = %e, open = connections.open(), "cannot accept connections: out of file descriptors; backing off");
                    }
                    failed += 1;
                    drop(slot);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                }
                // The peer gave up before we accepted it (ECONNABORTED and the like).
                Err(e) => debug!(error = %e, "accept failed"),
            }
        }
    });
    ReceiverStream::new(rx)
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// TLS over the `accepted` connections, each handshake in its own task with the configuration
/// in force when the connection arrived; failed handshakes (no trust, expired certificate,
/// plaintext) are dropped there.
pub fn tls(
    accepted: ReceiverStream<io::Result<Guarded>>,
    tls: Arc<ListenerTls>,
) -> ReceiverStream<io::Result<TlsStream<Guarded>>> {
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
            let peer = tcp
                .tcp()
                .peer_addr()
                .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
            let acceptor = TlsAcceptor::from(Arc::clone(&*tls.get()));
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The soft limit on open file descriptors (`/proc/self/limits`), where the system says.
pub fn descriptor_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, first_request: Duration) -> Limits {
        Limits {
            max_connections,
            first_request,
            idle: Duration::from_secs(60),
        }
    }

    /// The 40 ms stall came back whenever an accepted socket lacked TCP_NODELAY; this checks
    /// the option itself, so it needs no clock. The TLS path takes its sockets from `accept`.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Connections::new(limits(8, Duration::from_secs(60)));
        let mut accepted = accept(listener, connections);
        for _ in 0..3 {
            let _client = TcpStream::connect(addr).await.unwrap();
            let server_side = accepted.next().await.unwrap().unwrap();
            assert!(
                server_side.tcp().nodelay().unwrap(),
                "TCP_NODELAY on the accepted socket"
            );
        }
    }

    #[tokio::test]
    async fn beyond_the_limit_connections_wait_until_a_slot_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Connections::new(limits(2, Duration::from_secs(60)));
        let mut accepted = accept(listener, connections.clone());
        let _clients: Vec<TcpStream> = futures_join(addr, 3).await;
        let first = accepted.next().await.unwrap().unwrap();
        let _second = accepted.next().await.unwrap().unwrap();
        assert_eq!(connections.open(), 2);
        // The third waits in the backlog: nothing more is accepted until a slot frees.
        let third = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(third.is_err(), "a third connection was accepted");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), accepted.next()).await;
        assert!(matches!(third, Ok(Some(Ok(_)))));
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_closed_in_its_time() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Connections::new(limits(2, Duration::from_millis(100)));
        let mut accepted = accept(listener, connections);
        let _client = TcpStream::connect(addr).await.unwrap();
        let mut server_side = accepted.next().await.unwrap().unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), server_side.read(&mut buf))
            .await
            .expect("closed by its own timer");
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    async fn futures_join(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        clients
    }
}
