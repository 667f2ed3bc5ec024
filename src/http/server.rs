//! The HTTP server: hyper's HTTP/1.1 connections, with the bounds that keep hostile or
//! broken clients from taking the process down.
//!
//! - **Connections.** At most `http.max_connections` are open on `http.listen`. One more is
//!   accepted and closed at once (in plain HTTP after a `503` written without waiting) and
//!   counted in `kpi_http_connections_refused_total`, so that nothing waits unseen in the
//!   kernel's backlog and the process never runs out of file descriptors.
//! - **Timeouts.** A request head must be complete within `http.header_read_timeout`:
//!   counted from the connection's start for its first request (TLS handshake included),
//!   from the first byte for the next ones. After a response, a connection waits at most
//!   `http.idle_timeout` for its next request (time spent on a response the client does not
//!   read counts as idle). A timeout closes the connection without an answer. hyper's own
//!   header timeout is not used: it starts when the server begins to wait, so it would cut
//!   idle keep-alive connections at the header timeout too.
//! - **Requests.** Heads over 16 KiB are answered `431`, malformed ones `400` (hyper's
//!   parser). Every endpoint is a GET without a body: a request that announces one
//!   (`Content-Length` above 0, or any `Transfer-Encoding`) is answered `413` unread. Then
//!   basic authentication (`401`), then routing (`404`, `405`). A request answered 4xx
//!   closes its connection, so that a refused client cannot hold it for the idle timeout.
//! - **Probes.** `http.probe_listen` serves `/healthz` and `/readyz` alone, in plain HTTP
//!   without authentication, with [`PROBE_CONNECTIONS`] connections of its own and no
//!   keep-alive: the probes answer while `http.listen` is at its limit.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;
use tracing::{debug, info, warn};

use super::auth::{BasicAuth, Verified};
use crate::config::HttpConfig;
use crate::http::ServedState;
use crate::metrics::{HttpMetrics, Metrics};

/// Connections of the probe listener. Probes (kubelet's among them) open one connection
/// per probe, and without keep-alive each is held at most the header-read timeout.
pub const PROBE_CONNECTIONS: u32 = 16;
/// Larger request heads are answered 431. A scrape's head is well under 1 KiB, and each
/// connection's read buffer may grow to this size.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// File descriptors the process needs besides its HTTP connections: Kafka clients, the
/// runtime, files.
const OTHER_DESCRIPTORS: u64 = 256;
/// How long open connections may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after an accept error that is not the client's (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per listener and kind of trouble in this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Written to a plain-HTTP connection refused at the limit.
const LIMIT_REACHED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
    content-length: 25\r\nconnection: close\r\nretry-after: 1\r\n\r\nconnection limit reached\n";

/// The bound listeners, ready to serve.
pub struct Server {
    listeners: Vec<(TcpListener, Arc<Endpoint>)>,
}

impl Server {
    /// Binds `http.listen` and `http.probe_listen`, loads the certificate and makes sure the
    /// process may open a file descriptor for every connection.
    pub fn bind(
        config: &HttpConfig,
        metrics: Arc<Metrics>,
        status: Arc<ServedState>,
    ) -> anyhow::Result<Server> {
        let probe_connections = if config.probe_listen.is_some() {
            PROBE_CONNECTIONS
        } else {
            0
        };
        reserve_descriptors(u64::from(config.max_connections + probe_connections))?;
        let timeouts = Timeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
        };
        let http = &metrics.http;
        let verified = Verified {
            admitted: http.password_verifications.with_label_values(&["admitted"]),
            refused: http.password_verifications.with_label_values(&["refused"]),
        };
        let main = Endpoint {
            router: super::router(metrics.clone(), status.clone()),
            auth: BasicAuth::new(
                config
                    .basic_auth_users
                    .iter()
                    .map(|(user, hash)| (user.clone(), hash.expose().clone()))
                    .collect(),
                verified,
            ),
            tls: super::tls::acceptor(config)?,
            keep_alive: true,
            ..Endpoint::new("main", config.max_connections, timeouts, http)
        };
        let socket = listen(config.listen)
            .with_context(|| format!("binding http.listen = {}", config.listen))?;
        info!(
            address = %socket.local_addr()?,
            tls = main.tls.is_some(),
            basic_auth = main.auth.is_some(),
            max_connections = config.max_connections,
            "serving /metrics, /kpis, /healthz, /readyz"
        );
        if main.auth.is_some() && main.tls.is_none() {
            warn!("basic authentication without TLS: passwords cross the network in clear");
        }
        let mut listeners = vec![(socket, Arc::new(main))];
        if let Some(address) = config.probe_listen {
            let probes = Endpoint {
                router: super::probes(metrics.clone(), status),
                ..Endpoint::new("probe", PROBE_CONNECTIONS, timeouts, http)
            };
            let socket = listen(address)
                .with_context(|| format!("binding http.probe_listen = {address}"))?;
            info!(address = %socket.local_addr()?, "serving /healthz, /readyz for probes");
            listeners.push((socket, Arc::new(probes)));
        }
        Ok(Server { listeners })
    }

    /// Serves until `stop` is cancelled, then gives open connections [`SHUTDOWN_GRACE`] to
    /// finish.
    pub async fn serve(self, stop: CancellationToken) {
        // A task per listener: the probe listener accepts while the main one is busy.
        let loops: Vec<_> = self
            .listeners
            .into_iter()
            .map(|(socket, endpoint)| tokio::spawn(endpoint.accept(socket, stop.clone())))
            .collect();
        for accept in loops {
            let _ = accept.await;
        }
    }
}

/// A listening socket whose backlog takes a burst of connections while the accept loop,
/// which takes them as fast as they come (closing those over the limit), catches up; a
/// connection that finds the backlog full is left waiting by the kernel, unseen. Linux
/// caps the backlog at `net.core.somaxconn` (4096 by default).
fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Raises the soft limit of open files to what the connections need, within the hard
/// limit; fails, naming `http.max_connections`, when the hard limit is lower.
fn reserve_descriptors(connections: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = connections + OTHER_DESCRIPTORS;
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= needed) {
        return Ok(());
    }
    if let Some(hard) = limit.maximum.filter(|hard| *hard < needed) {
        anyhow::bail!(
            "http.max_connections needs about {needed} open files, more than the process may \
             open ({hard}, the hard limit, `ulimit -Hn`)"
        );
    }
    limit.current = Some(needed);
    setrlimit(Resource::Nofile, limit).with_context(|| {
        format!("raising the open-file limit to {needed} for http.max_connections")
    })
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// One listener's service and bounds.
struct Endpoint {
    router: Router,
    auth: Option<BasicAuth>,
    tls: Option<TlsAcceptor>,
    keep_alive: bool,
    timeouts: Timeouts,
    name: &'static str,
    max_connections: u32,
    slots: Arc<Semaphore>,
    open: IntGauge,
    refused: IntCounter,
    header_timeouts: IntCounter,
    idle_timeouts: IntCounter,
}

impl Endpoint {
    /// A plain listener without authentication or keep-alive, serving nothing yet.
    fn new(
        name: &'static str,
        max_connections: u32,
        timeouts: Timeouts,
        metrics: &HttpMetrics,
    ) -> Endpoint {
        Endpoint {
            router: Router::new(),
            auth: None,
            tls: None,
            keep_alive: false,
            timeouts,
            name,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            open: metrics.connections.with_label_values(&[name]),
            refused: metrics.refused.with_label_values(&[name]),
            header_timeouts: metrics.timeouts.with_label_values(&[name, "header_read"]),
            idle_timeouts: metrics.timeouts.with_label_values(&[name, "idle"]),
        }
    }

    async fn accept(self: Arc<Self>, socket: TcpListener, stop: CancellationToken) {
        let (mut refusals, mut failures) = (Throttle::default(), Throttle::default());
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = socket.accept() => accepted,
            };
            match accepted {
                Ok((tcp, _)) => match self.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(self.clone().connection(tcp, permit, stop.clone()));
                    }
                    Err(_) => {
                        self.refuse(tcp);
                        if let Some(refused) = refusals.due() {
                            warn!(
                                listener = self.name,
                                max_connections = self.max_connections,
                                refused,
                                "connection limit reached: closing new connections"
                            );
                        }
                    }
                },
                // The client gave up before it was accepted.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    if let Some(failed) = failures.due() {
                        warn!(listener = self.name, error = %e, failed, "cannot accept connections");
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        drop(socket);
        // Each connection holds its slot until it ends, within SHUTDOWN_GRACE of `stop`.
        let _all_ended = self.slots.acquire_many(self.max_connections).await;
    }

    fn refuse(&self, tcp: TcpStream) {
        self.refused.inc();
        if self.tls.is_none() {
            // Never waits: a fresh socket's buffer takes these bytes whole, or the client
            // does not get them.
            let _ = tcp.try_write(LIMIT_REACHED);
        }
    }

    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        permit: OwnedSemaphorePermit,
        stop: CancellationToken,
    ) {
        let _slot = Slot::take(permit, &self.open);
        let started = Instant::now();
        // Each answer is written whole: Nagle's algorithm would only hold back its end.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.serve(tcp, started, stop).await;
        };
        let handshake =
            tokio::time::timeout_at(started + self.timeouts.header_read, tls.accept(tcp));
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.header_timeouts.inc();
                    return;
                }
            },
        };
        self.serve(stream, started, stop).await
    }

    async fn serve<S>(self: Arc<Self>, io: S, started: Instant, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cycle = Arc::new(Cycle::new(started));
        let io = TokioIo::new(Deadlines::new(io, cycle.clone(), self.clone()));
        let endpoint = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let (endpoint, cycle) = (endpoint.clone(), cycle.clone());
            cycle.answering();
            async move {
                let response = endpoint.respond(request).await;
                cycle.answered();
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(self.keep_alive)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(SHUTDOWN_GRACE, connection).await.unwrap_or(Ok(()))
            }
        };
        if let Err(e) = ended {
            debug!(listener = self.name, error = %e, "connection ended");
        }
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Body> {
        if !request.body().is_end_stream() {
            return closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request bodies are not accepted\n",
            );
        }
        if let Some(auth) = &self.auth
            && !auth.admits(request.headers()).await
        {
            let mut response = closing(StatusCode::UNAUTHORIZED, "unauthorized\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kpi-stream\", charset=\"UTF-8\""),
            );
            return response;
        }
        let Ok(mut response) = self.router.clone().call(request).await;
        if response.status().is_client_error() {
            close_after(&mut response);
        }
        response
    }
}

/// A refusal that closes its connection.
fn closing(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    close_after(&mut response);
    response
}

fn close_after(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A connection's place under the limit, given back when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Slot {
    fn take(permit: OwnedSemaphorePermit, open: &IntGauge) -> Slot {
        open.inc();
        Slot {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Counts occurrences of one kind of trouble and says when a log line about them is due:
/// at the first, then at most once per [`LOG_INTERVAL`].
#[derive(Default)]
struct Throttle {
    logged: Option<Instant>,
    since_logged: u64,
}

impl Throttle {
    /// Counts one occurrence; when a line is due, the occurrences since the last one.
    fn due(&mut self) -> Option<u64> {
        self.since_logged += 1;
        let now = Instant::now();
        if self.logged.is_some_and(|t| now < t + LOG_INTERVAL) {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.since_logged))
    }
}

/// Where a connection is in its request cycle, which decides its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head to be complete: since the connection started, or since
    /// the first byte of a later request.
    Head { since: Instant },
    /// A request is being answered.
    Busy,
    /// Since the last response: waiting for the next request's first byte.
    Idle { since: Instant },
}

/// A connection's [`Phase`], shared by its stream and its service.
struct Cycle(Mutex<(Phase, Option<Waker>)>);

impl Cycle {
    fn new(started: Instant) -> Cycle {
        Cycle(Mutex::new((Phase::Head { since: started }, None)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Phase, Option<Waker>)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answering(&self) {
        self.lock().0 = Phase::Busy;
    }

    /// The response is ready: the idle time starts, and the stream's deadline with it. The
    /// stream may have been left waiting while busy (hyper reads during a request to see
    /// the client leave) and must be polled again to take the new deadline.
    fn answered(&self) {
        let waiting = {
            let mut cycle = self.lock();
            cycle.0 = Phase::Idle {
                since: Instant::now(),
            };
            cycle.1.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// The first byte after a response starts the next request's head.
    fn bytes_arrived(&self) {
        let mut cycle = self.lock();
        if let Phase::Idle { .. } = cycle.0 {
            cycle.0 = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// The current phase; while busy, `cx` is woken when the answer is ready.
    fn phase(&self, cx: &Context<'_>) -> Phase {
        let mut cycle = self.lock();
        if cycle.0 == Phase::Busy {
            cycle.1 = Some(cx.waker().clone());
        }
        cycle.0
    }
}

/// The connection's stream, failing with `TimedOut` once the deadline of the current
/// [`Phase`] passes while hyper waits on it.
struct Deadlines<S> {
    io: S,
    cycle: Arc<Cycle>,
    endpoint: Arc<Endpoint>,
    timer: Pin<Box<Sleep>>,
    timed_out: bool,
}

impl<S> Deadlines<S> {
    fn new(io: S, cycle: Arc<Cycle>, endpoint: Arc<Endpoint>) -> Self {
        let timer = Box::pin(tokio::time::sleep(endpoint.timeouts.header_read));
        Deadlines {
            io,
            cycle,
            endpoint,
            timer,
            timed_out: false,
        }
    }

    /// Pending until the current phase's deadline, then the error that ends the connection.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.timed_out {
            let timeouts = self.endpoint.timeouts;
            let (deadline, counter) = match self.cycle.phase(cx) {
                Phase::Head { since } => {
                    (since + timeouts.header_read, &self.endpoint.header_timeouts)
                }
                Phase::Idle { since } => (since + timeouts.idle, &self.endpoint.idle_timeouts),
                Phase::Busy => return Poll::Pending,
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            counter.inc();
            self.timed_out = true;
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection timed out",
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.cycle.bytes_arrived();
                Poll::Ready(Ok(()))
            }
            read => read,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            written => written,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            written => written,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            flushed => flushed,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_shutdown(cx) {
            Poll::Pending => this.poll_deadline(cx).map(Err),
            shut => shut,
        }
    }
}
