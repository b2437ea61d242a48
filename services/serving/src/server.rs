//! Connections: accepting, bounding and closing them, and stopping gracefully.
//!
//! `axum::serve` has no timeouts and no connection cap, so one slow or idle client per file
//! descriptor could starve everyone. This loop serves each connection with hyper's HTTP/1
//! builder instead, which reads request heads under a deadline, and adds what hyper lacks:
//! - an idle timeout: a connection with no request in flight and no bytes arriving is closed;
//! - a cap on open connections (a semaphore around accept): past it a client gets an
//!   immediate JSON 503 instead of waiting in the kernel's backlog;
//! - graceful shutdown with a deadline: in-flight requests finish, then whatever is left is
//!   dropped, so a client holding a half-sent request cannot keep the process alive.
//!
//! Body and whole-request timeouts are per request, in the router (`http::RequestLimits`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Limits on connections, each settable on `serve`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time from waiting for a request to having all its headers (slowloris).
    pub header_read_timeout: Duration,
    /// Time a connection may sit with no request in flight and no bytes arriving.
    pub idle_timeout: Duration,
    /// Most connections open at once; lowered to what the open-files limit allows.
    pub max_connections: usize,
    /// After SIGTERM, time for in-flight requests to finish before the process exits.
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4096,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// After the listener closes, how long connections just accepted get for their first
/// request to arrive before graceful shutdown closes the ones still idle.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(250);

/// Most bytes hyper buffers for one request head; heads over `RequestLimits::header_bytes`
/// (smaller) get the router's JSON 431 before this is reached.
const MAX_HEAD_BYTES: usize = 64 << 10;
/// File descriptors kept free for the listener, logs, model files and refusing connections.
const RESERVED_FDS: u64 = 64;

/// The connection cap the open-files limit allows: past it `accept` fails and every client,
/// `/health` included, waits in the backlog.
pub fn effective_max_connections(requested: usize) -> usize {
    let Some(open_files) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    else {
        return requested; // unlimited
    };
    let allowed = open_files.saturating_sub(RESERVED_FDS).max(1);
    requested.min(usize::try_from(allowed).unwrap_or(usize::MAX))
}

/// Whether, and how, a listener shares its port with other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSharing {
    /// Alone: a second process binding the port fails.
    Exclusive,
    /// SO_REUSEPORT, the kernel spreading new connections over every copy by its hash
    /// (`serve --shared-port`: a swarm's tasks on their node's host network).
    Spread,
    /// SO_REUSEPORT, every new connection going to the copy that bound last (`serve
    /// --reuse-port`: a new version taking the port over from the old one, see
    /// [`steer_to_newest`]).
    Newest,
}

/// Listens on `addr` as `TcpListener::bind` does (SO_REUSEADDR on Unix), plus SO_REUSEPORT
/// when the port is shared, so another copy or the next version of the service can bind the
/// same port before this one lets go of it.
///
/// With [`PortSharing::Newest`] on Linux the port's group of sockets also steers every new
/// connection to the newest of them: once the next version listens, this one gets no new
/// connection, and when it stops it closes an empty queue. Without that, a connection the
/// kernel queued on it a moment before it closed would be reset, unless the machine sets
/// `net.ipv4.tcp_migrate_req = 1` (few do).
pub fn bind(addr: SocketAddr, sharing: PortSharing) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if sharing != PortSharing::Exclusive {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    let listener = socket.listen(1024)?;
    if sharing == PortSharing::Newest {
        // After listen: only then has the socket joined the port's group, whose program this
        // sets (one attached before would be dropped as the socket joins).
        if let Err(e) = steer_to_newest(&listener) {
            tracing::warn!(error = %e, "cannot steer new connections to the newest version: a hand-over may reset a connection");
        }
    }
    Ok(listener)
}

/// Sets the program that picks, for each new connection, which socket of the port's
/// SO_REUSEPORT group gets it: always the second (index 1). The kernel keeps the group's
/// sockets in the order they joined and moves the last one into a closed socket's place, so
/// while two versions listen the second is the new one, and alone a version is index 0; an
/// index past the group's end makes the kernel fall back to its usual hash, so a version alone
/// gets everything.
#[cfg(target_os = "linux")]
fn steer_to_newest(listener: &TcpListener) -> std::io::Result<()> {
    // Classic BPF, one instruction: `ret #1`.
    let mut program = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 1,
    }];
    // The kernel copies the program during the call; `program` outlives it.
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    nix::sys::socket::setsockopt(
        listener,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &fprog,
    )
    .map_err(std::io::Error::from)
}

/// Elsewhere the kernel picks among the sockets as it will: the old version may still receive
/// a connection just before it closes.
#[cfg(not(target_os = "linux"))]
fn steer_to_newest(_: &TcpListener) -> std::io::Result<()> {
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops within the deadline.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max_connections = effective_max_connections(limits.max_connections);
    if max_connections < limits.max_connections {
        tracing::warn!(
            requested = limits.max_connections,
            allowed = max_connections,
            "the open-files limit lowers the connection cap"
        );
    }
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);

    let serve_connection = |stream: TcpStream| {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse_overloaded(stream, max_connections));
            return;
        };
        let _ = stream.set_nodelay(true);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = TokioIo::new(IdleTimeout::new(
            stream,
            in_flight.clone(),
            limits.idle_timeout,
        ));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::new(in_flight.clone());
            let answer = app.clone().oneshot(request.map(Body::new));
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    };

    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        serve_connection(stream);
    }
    // Connections the kernel has already queued on this listener would be reset when it
    // closes: serve them first. With SO_REUSEPORT the next version listens beside this one
    // and, steered there (see `bind`), takes every connection from here on.
    for stream in queued_connections(listener) {
        serve_connection(stream);
    }
    // A connection accepted a moment ago has not had its request read yet, and graceful
    // shutdown closes a connection with no request in flight at once: its client would get
    // no answer. A short grace lets such requests begin, and then they are finished.
    if permits.available_permits() < max_connections {
        tokio::time::sleep(FIRST_REQUEST_GRACE).await;
    }
    let open = max_connections - permits.available_permits();
    tracing::info!(
        open_connections = open,
        deadline_seconds = limits.shutdown_timeout.as_secs_f64(),
        "shutting down: finishing in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            let open = max_connections - permits.available_permits();
            tracing::warn!(open_connections = open, "shutdown deadline reached: dropping the remaining connections");
        }
    }
}

/// Takes every connection the kernel has queued on `listener`, then closes it. Asked of the
/// socket itself until it has none: tokio's `accept` answers from the readiness its reactor
/// has seen, which can lag behind a connection queued a moment ago.
fn queued_connections(listener: TcpListener) -> Vec<TcpStream> {
    let mut queued = Vec::new();
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the queued connections: they may be reset");
            return queued;
        }
    };
    // Non-blocking already (`into_std` keeps it so): this ends at the first "would block".
    while let Ok((stream, _)) = listener.accept() {
        let registered = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        match registered {
            Ok(stream) => queued.push(stream),
            Err(e) => tracing::warn!(error = %e, "cannot serve a queued connection"),
        }
    }
    queued
}

/// Answers a connection over the cap with a 503 and closes it, without reading its request.
async fn refuse_overloaded(mut stream: TcpStream, max_connections: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::to_string(&crate::api::ErrorBody::new(
        "overloaded",
        format!(
            "{max_connections} connections are open, the most this service accepts; retry shortly"
        ),
    ))
    .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client sent, so closing does not reset the connection under it.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
    tracing::warn!(max_connections, "connection refused: too many open");
}

/// Counts a request in flight on its connection for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(in_flight: Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Self(in_flight)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that reads as closed once it has been idle too long: no request in flight and no
/// bytes received for `timeout`. hyper then closes the connection as a client would have.
struct IdleTimeout {
    stream: TcpStream,
    in_flight: Arc<AtomicUsize>,
    timeout: Duration,
    /// When the connection last became idle; `None` while busy.
    idle_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    fn new(stream: TcpStream, in_flight: Arc<AtomicUsize>, timeout: Duration) -> Self {
        Self {
            stream,
            in_flight,
            timeout,
            idle_since: None,
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.idle_since = None;
            }
            return Poll::Ready(result);
        }
        if this.in_flight.load(Ordering::Relaxed) > 0 {
            this.idle_since = None;
            return Poll::Pending;
        }
        let since = *this.idle_since.get_or_insert_with(Instant::now);
        let deadline = since + this.timeout;
        // The timer is not moved at every idle moment (that would cost each request a trip
        // through the timer wheel): when it fires before the deadline, it is set to it then.
        if this.timer.deadline() > deadline {
            this.timer.as_mut().reset(deadline);
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                // Idle past the deadline: end of stream, which hyper takes as the client
                // leaving.
                return Poll::Ready(Ok(()));
            }
            this.timer.as_mut().reset(deadline);
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
