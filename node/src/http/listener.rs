//! The node's listener: plain TCP, or TLS when the node has TLS material. TLS
//! handshakes run in their own tasks (bounded in number, each with a deadline) so that
//! a slow or silent client never holds up accepting others; each connection carries
//! [`Peer`] (remote address, whether it presented a client certificate that chains to
//! the cluster CA) to the handlers as `ConnectInfo`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;
/// Established connections not yet taken by the server.
const READY_QUEUE: usize = 64;

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    /// A client certificate was presented and verified against the cluster CA (a
    /// member or the operator).
    pub client_cert: bool,
}

/// Plain TCP or TLS; `tune` runs on every accepted socket (TCP_NODELAY, keepalive).
pub enum NodeListener {
    Plain {
        tcp: TcpListener,
        tune: fn(&TcpStream),
    },
    Tls {
        ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
        local: SocketAddr,
    },
}

async fn accept_tcp(tcp: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok(c) => return c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl NodeListener {
    pub fn plain(tcp: TcpListener, tune: fn(&TcpStream)) -> NodeListener {
        NodeListener::Plain { tcp, tune }
    }

    /// Starts the accept loop; handshakes with `config`.
    pub fn tls(
        tcp: TcpListener,
        tune: fn(&TcpStream),
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<NodeListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (sock, remote) = accept_tcp(&tcp).await;
                tune(&sock);
                let (acceptor, ready_tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            let peer = Peer {
                                remote,
                                client_cert,
                            };
                            let _ = ready_tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(NodeListener::Tls { ready, local })
    }
}

impl Listener for NodeListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            NodeListener::Plain { tcp, tune } => {
                let (sock, remote) = accept_tcp(tcp).await;
                tune(&sock);
                (
                    Either::Left(sock),
                    Peer {
                        remote,
                        client_cert: false,
                    },
                )
            }
            NodeListener::Tls { ready, .. } => match ready.recv().await {
                Some((s, peer)) => (Either::Right(s), peer),
                // The accept loop only ends when this receiver is gone.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        let local = match self {
            NodeListener::Plain { tcp, .. } => tcp.local_addr()?,
            NodeListener::Tls { local, .. } => *local,
        };
        Ok(Peer {
            remote: local,
            client_cert: false,
        })
    }
}

impl Connected<IncomingStream<'_, NodeListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, NodeListener>) -> Self {
        stream.remote_addr().clone()
    }
}
