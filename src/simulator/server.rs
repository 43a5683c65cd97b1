//! The accept loop and the connections: HTTP/1.1 and h2c on one port (or both over TLS), a
//! per-connection token a handler cancels to drop the connection with no response, and a
//! graceful, bounded shutdown.
//!
//! `axum::serve` cannot close a connection from inside a handler, which the "dropped after
//! commit" fault needs, so connections are served with hyper-util directly.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::routes::{self, BASE_PATH};
use super::state::Shared;
use super::{Faults, Ledger, Scenario};

/// How long [`SimulatorHandle::shutdown`] lets requests in flight finish before it cuts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections the kernel queues for a [`ReservedPort`] once it listens (what `TcpListener::bind`
/// uses too).
const LISTEN_BACKLOG: u32 = 1024;
/// A pause after a failed `accept` (out of file descriptors, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// The longest a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running simulator. Dropping it stops the server too (without waiting).
pub struct SimulatorHandle {
    shared: Arc<Shared>,
    address: SocketAddr,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    /// The PEM certificate of the CA behind the server's certificate, when serving HTTPS.
    tls_ca_pem: Option<String>,
}

impl SimulatorHandle {
    /// `http://127.0.0.1:PORT/services/v2` (`https://` when serving TLS); a wildcard listen
    /// address is given as loopback.
    pub fn base_url(&self) -> String {
        let scheme = match self.tls_ca_pem {
            Some(_) => "https",
            None => "http",
        };
        base_url(scheme, self.address)
    }

    /// When serving HTTPS: the PEM certificate of the CA that signed the server's certificate
    /// (what a client passes as `--ca-file` to trust it).
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca_pem.as_deref()
    }

    /// A snapshot of everything committed and received so far.
    pub fn ledger(&self) -> Ledger {
        self.shared.lock().ledger.clone()
    }

    /// Every listed order (`Scenario::orders`) as `GET /order/certificate` shows it now, by id,
    /// with no filter: what a test compares a selection with.
    pub fn listed_orders(&self) -> Vec<serde_json::Value> {
        let now_us = self.shared.clock.now_us();
        super::catalog::snapshot(&self.shared, &mut self.shared.lock(), now_us)
    }

    /// Replaces the faults; requests already past their fault draw are not affected.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Revokes the key: every API request processed from now on (including reissues that
    /// arrived earlier and wait out the commit delay) is refused with 403.
    pub fn revoke_key(&self) {
        self.shared.lock().key_revoked = true;
    }

    /// Publishes a DCV token for `dns_name`, as the customer's DNS or web automation would;
    /// `check-dcv` finds it from then on. Same as `POST /__simulator/dcv`.
    pub fn publish_dcv_token(&self, dns_name: &str, value: &str) {
        self.shared.lock().publish_dcv_token(dns_name, value);
    }

    /// Every DCV token not yet used up runs out now, as if its 30 days had passed.
    pub fn expire_dcv_tokens(&self) {
        let now_us = self.shared.clock.now_us();
        self.shared.lock().expire_dcv_tokens(now_us);
    }

    /// The current DCV token of the order's newest reissue, if it has one.
    pub fn dcv_token(&self, order_id: u64) -> Option<String> {
        self.shared.lock().dcv_token_of(order_id)
    }

    /// Stops accepting, lets open requests finish (at most a few seconds), and waits for the
    /// server task.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            // A panic in the accept loop has already been reported by tokio; nothing to add.
            let _ = server.await;
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A port that is bound but not listening: every connection to it is refused (the kernel
/// answers a SYN with a reset), as when CertCentral or the network in front of it is down. No
/// other process can take the port meanwhile, so [`ReservedPort::serve`] later starts the
/// simulator on the very address a client was given.
pub struct ReservedPort {
    socket: TcpSocket,
    address: SocketAddr,
}

impl ReservedPort {
    /// Binds `address` (port 0 picks a free one) without listening.
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(address)?;
        let address = socket.local_addr()?;
        Ok(Self { socket, address })
    }

    /// [`ReservedPort::bind`] on `127.0.0.1:0`.
    pub fn loopback() -> io::Result<Self> {
        Self::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The base URL the simulator will have once it serves here (over plain HTTP).
    pub fn base_url(&self) -> String {
        base_url("http", self.address)
    }

    /// Starts listening and serving `scenario`: from now on connections are accepted.
    pub async fn serve(self, scenario: Scenario) -> io::Result<SimulatorHandle> {
        let listener = self.socket.listen(LISTEN_BACKLOG)?;
        start(listener, scenario).await
    }
}

/// `SCHEME://HOST:PORT/services/v2`; a wildcard address is given as loopback.
fn base_url(scheme: &str, address: SocketAddr) -> String {
    let host = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "{scheme}://{}{BASE_PATH}",
        SocketAddr::new(host, address.port())
    )
}

/// Serves `scenario` on `listener` until [`SimulatorHandle::shutdown`].
pub async fn start(listener: TcpListener, scenario: Scenario) -> io::Result<SimulatorHandle> {
    let address = listener.local_addr()?;
    let tls = scenario.tls.clone();
    // Making the CAs takes a few milliseconds of signing; keep it off the async workers.
    let (shared, tls) = tokio::task::spawn_blocking(move || {
        let tls = tls
            .as_ref()
            .map(super::tls::make)
            .transpose()
            .map_err(io::Error::other)?;
        let shared = Shared::new(scenario).map_err(io::Error::other)?;
        Ok::<_, io::Error>((shared, tls))
    })
    .await
    .map_err(io::Error::other)??;
    let shared = Arc::new(shared);
    let shutdown = CancellationToken::new();
    let (tls_ca_pem, acceptor) = match tls {
        Some(tls) => (Some(tls.ca_pem), Some(tls.acceptor)),
        None => (None, None),
    };
    let server = tokio::spawn(accept_loop(
        listener,
        Arc::clone(&shared),
        acceptor,
        shutdown.clone(),
    ));
    tracing::debug!(%address, "simulator listening");
    Ok(SimulatorHandle {
        shared,
        address,
        shutdown,
        server: Some(server),
        tls_ca_pem,
    })
}

/// [`start`] on `127.0.0.1:0`.
pub async fn start_on_loopback(scenario: Scenario) -> io::Result<SimulatorHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    start(listener, scenario).await
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let cut = CancellationToken::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small JSON answers: do not let Nagle hold them back.
                    let _ = stream.set_nodelay(true);
                    let builder = Arc::clone(&builder);
                    let shared = Arc::clone(&shared);
                    let (shutdown, cut) = (shutdown.clone(), cut.clone());
                    let Some(tls) = tls.clone() else {
                        connections.spawn(serve_connection(builder, stream, shared, shutdown, cut));
                        continue;
                    };
                    connections.spawn(async move {
                        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream));
                        let stream = tokio::select! {
                            () = cut.cancelled() => return,
                            done = handshake => match done {
                                Ok(Ok(stream)) => stream,
                                // A client that refuses the certificate ends up here.
                                Ok(Err(error)) => {
                                    tracing::debug!(%error, "simulator TLS handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            },
                        };
                        serve_connection(builder, stream, shared, shutdown, cut).await;
                    });
                }
                Err(error) => {
                    tracing::debug!(%error, "simulator accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        cut.cancel();
        connections.wait().await;
    }
}

async fn serve_connection<S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    cut: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Cancelled by a handler to drop this connection with no response. Under h2c that ends every
    // stream of the connection, as a real reset would.
    let drop_connection = CancellationToken::new();
    let service = {
        let drop_connection = drop_connection.clone();
        service_fn(move |request| {
            routes::handle(Arc::clone(&shared), drop_connection.clone(), request)
        })
    };
    let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "simulator connection ended with an error");
                }
                break;
            }
            () = drop_connection.cancelled() => break,
            () = cut.cancelled() => break,
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
