//! Bounds on the webhook's connections: a cap on how many are open, an idle timeout (no request
//! in flight), and TCP_NODELAY, as an axum-server acceptor in front of the TLS one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::webhook::metrics::Metrics;

/// How many connections may be open at once, and how long one may sit with no request.
pub struct Connections {
    limit: usize,
    idle: Duration,
    open: AtomicUsize,
    /// Logged on change only, so a flood of rejections is two log lines, not thousands.
    at_cap: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub fn new(limit: usize, idle: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Connections {
            limit: limit.max(1),
            idle,
            open: AtomicUsize::new(0),
            at_cap: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// True while every connection slot is taken: /readyz says not ready, so the Service
    /// sends the API server to other replicas.
    pub fn at_cap(&self) -> bool {
        self.open() >= self.limit
    }

    fn admit(self: &Arc<Self>) -> Option<OpenConnection> {
        let admitted = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.connections_rejected.inc();
            if !self.at_cap.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    limit = self.limit,
                    "connection cap reached: closing new connections until some close"
                );
            }
            return None;
        }
        self.metrics.connections_open.inc();
        Some(OpenConnection {
            connections: self.clone(),
        })
    }
}

/// One slot of the cap, given back when the connection is dropped (its socket closed).
struct OpenConnection {
    connections: Arc<Connections>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let c = &self.connections;
        let now = c.open.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        c.metrics.connections_open.dec();
        // Hysteresis: report recovery once a tenth of the slots are free again.
        if now <= c.limit - c.limit.div_ceil(10) && c.at_cap.swap(false, Ordering::SeqCst) {
            tracing::info!(
                open = now,
                limit = c.limit,
                "below the connection cap again"
            );
        }
    }
}

/// What the stream and the service of one connection share: requests in flight and when the
/// last one ended. Bytes do not count as activity, so h2 PINGs or a trickle cannot keep an
/// unused connection open.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    fn last(&self) -> Instant {
        self.last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// The acceptor: admits under the cap, sets TCP_NODELAY, then runs `inner` (the TLS handshake,
/// bounded by its own timeout).
#[derive(Clone)]
pub struct BoundedAcceptor<A> {
    inner: A,
    connections: Arc<Connections>,
}

impl<A> BoundedAcceptor<A> {
    pub fn new(inner: A, connections: Arc<Connections>) -> Self {
        BoundedAcceptor { inner, connections }
    }
}

type AcceptFuture<S, V> = Pin<Box<dyn Future<Output = io::Result<(S, V)>> + Send>>;

impl<A, S> Accept<TcpStream, S> for BoundedAcceptor<A>
where
    A: Accept<TcpStream, Tracked<S>>,
    A::Future: Send + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Service: Send + 'static,
    S: Send + 'static,
{
    type Stream = IdleStream<A::Stream>;
    type Service = A::Service;
    type Future = AcceptFuture<Self::Stream, Self::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Some(slot) = self.connections.admit() else {
            // Dropping the stream closes the socket now: no handshake, no buffers.
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection cap reached",
            ))));
        };
        // Small responses must not wait for delayed ACKs (Nagle's 40 ms stalls).
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        });
        let tracked = Tracked {
            inner: service,
            activity: activity.clone(),
        };
        let handshake = self.inner.accept(stream, tracked);
        let connections = self.connections.clone();
        Box::pin(async move {
            match handshake.await {
                Ok((stream, service)) => {
                    let idle = connections.idle;
                    // The idle clock starts when the handshake is done.
                    activity.touch();
                    Ok((
                        IdleStream {
                            inner: stream,
                            sleep: Box::pin(tokio::time::sleep(idle)),
                            activity,
                            idle,
                            connections,
                            _slot: slot,
                        },
                        service,
                    ))
                }
                Err(e) => {
                    connections.metrics.tls_handshake_failures.inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    Err(e)
                }
            }
        })
    }
}

/// The connection's stream: reading fails with `TimedOut` once no request has been in flight
/// for the idle timeout, which makes hyper close the connection (h1 and h2 alike).
pub struct IdleStream<S> {
    inner: S,
    sleep: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
    idle: Duration,
    connections: Arc<Connections>,
    _slot: OpenConnection,
}

impl<S> IdleStream<S> {
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.activity.last() + self.idle;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.activity.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            // A request is being answered: that is not idleness.
            self.activity.touch();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_expired(cx) {
            this.connections.metrics.connections_closed_idle.inc();
            tracing::debug!("closing an idle connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle",
            )));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection's service: counts requests in flight for the idle clock.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// A request in flight; its end restarts the idle clock.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, R> tower_service::Service<R> for Tracked<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            drop(guard);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_its_limit_and_frees_slots_on_close() {
        let metrics = Arc::new(Metrics::default());
        let c = Connections::new(2, Duration::from_secs(1), metrics.clone());
        let a = c.admit().expect("first");
        let b = c.admit().expect("second");
        assert!(c.at_cap());
        assert!(c.admit().is_none());
        drop(a);
        assert!(!c.at_cap());
        let _c = c.admit().expect("a freed slot");
        drop(b);
        assert_eq!(c.open(), 1);
        let text = metrics.encode();
        assert!(text.contains("keywire_connections_open 1"), "{text}");
        assert!(
            text.contains("keywire_connections_rejected_total 1"),
            "{text}"
        );
    }
}
