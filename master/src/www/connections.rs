//! The web port's connections: accepted here rather than by warp's own
//! server, because warp sets no timeout and no limit, and a client that
//! opens sockets and sends nothing held them for ever (1,100 idle sockets
//! under `ulimit -n 1024` left the master unable to accept anything, its
//! database included).
//!
//! - **Header and idle timeout**: a connection must send a request's headers
//!   within `www.idle_timeout` of opening or of its last answer (hyper's
//!   header-read timeout, which also runs while a kept-alive connection
//!   waits), and a whole request, body included, must be read and answered
//!   within [`REQUEST_TIMEOUT`] (408 otherwise).
//! - **Write stall**: a client that stops reading an answer (or `/ws` events)
//!   for [`WRITE_STALL`] is dropped.
//! - **A cap**: at most [`Slots::cap`] connections at once, `/ws` sessions
//!   included, leaving file descriptors for the database, logs and the
//!   worker port. At the cap, the connection quiet for longest (idle or
//!   trickling) makes room for the new one; when none is quiet, the new one is
//!   answered 503 and closed. So a flood of idle sockets cannot keep a real
//!   client out for longer than it takes to accept it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Longest a request may take from its headers to its answer's headers.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a client may leave an answer unread before it is dropped.
pub(super) const WRITE_STALL: Duration = Duration::from_secs(60);
/// A connection quiet for less than this is never made to give up its slot:
/// it is more likely between two reads of a real request than abandoned.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// File descriptors kept out of the cap for everything else the master
/// opens: database connections, SQLite's files, logs, the worker socket,
/// the config watcher.
const RESERVED_FDS: u64 = 128;

/// The client's address, put in each request's extensions (warp's own
/// `addr::remote` only knows connections warp accepted itself).
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientAddr(pub(super) SocketAddr);

/// When a connection last read or wrote, in milliseconds since the server
/// started, and how to make it give up its slot.
struct Activity {
    last_ms: AtomicU64,
    evict: Notify,
    /// Told to give up its slot, and not closed yet.
    evicting: std::sync::atomic::AtomicBool,
    /// Notified when the slot is given up (its socket closed).
    closed: Notify,
    /// `/ws` sessions are never evicted: they are quiet by nature.
    evictable: bool,
}

/// The connection slots: how many, and who holds them.
pub(super) struct Slots {
    cap: usize,
    started: Instant,
    held: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// A held slot; dropping it frees the slot.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.held.lock().unwrap().remove(&self.id);
        self.activity.closed.notify_one();
    }
}

/// Longest [`Slots::take`] waits for an evicted connection to close.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

impl Slots {
    /// `configured` connections, or fewer when the process may not open
    /// that many files and still keep [`RESERVED_FDS`] for the rest.
    pub(super) fn new(configured: usize) -> Arc<Slots> {
        let fd_room = open_files_limit()
            .map(|limit| limit.saturating_sub(RESERVED_FDS).max(16) as usize)
            .unwrap_or(usize::MAX);
        Arc::new(Slots {
            cap: configured.min(fd_room),
            started: Instant::now(),
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// How many connections may be open at once.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Take a slot, making the longest-quiet evictable connection give up
    /// its own if all are taken (and waiting until it has closed, so the
    /// slots count open sockets); `None` when every holder is busy.
    pub(super) async fn take(self: &Arc<Self>, evictable: bool) -> Option<Slot> {
        let evicted = self.evict_if_full()?;
        if let Some(evicted) = evicted {
            let _ = tokio::time::timeout(EVICTION_WAIT, evicted.closed.notified()).await;
        }
        let mut held = self.held.lock().unwrap();
        if held.len() >= self.cap {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            last_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
            evicting: Default::default(),
            closed: Notify::new(),
            evictable,
        });
        held.insert(id, activity.clone());
        Some(Slot {
            slots: self.clone(),
            id,
            activity,
        })
    }

    /// At the cap, tell the longest-quiet evictable connection to close:
    /// `Some(None)` when there is room, `Some(Some(it))` when one was told,
    /// `None` when none may be.
    fn evict_if_full(&self) -> Option<Option<Arc<Activity>>> {
        let held = self.held.lock().unwrap();
        if held.len() < self.cap {
            return Some(None);
        }
        let now = self.now_ms();
        let quietest = held
            .values()
            .filter(|a| a.evictable && !a.evicting.load(Ordering::Relaxed))
            .map(|a| (a, a.last_ms.load(Ordering::Relaxed)))
            .filter(|(_, last)| now.saturating_sub(*last) >= EVICTABLE_AFTER.as_millis() as u64)
            .min_by_key(|(_, last)| *last)?
            .0
            .clone();
        quietest.evicting.store(true, Ordering::Relaxed);
        quietest.evict.notify_one();
        Some(Some(quietest))
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Slot {
    /// Resolves when another connection took this slot.
    pub(super) async fn evicted(&self) {
        self.activity.evict.notified().await
    }
}

/// The soft limit on open files, when it can be read.
fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// A TCP stream that records its activity in its slot, fails a write left
/// pending for [`WRITE_STALL`], and fails its first read when nothing comes
/// within the idle timeout (hyper's header timeout only starts with the
/// first byte, once it knows the connection is HTTP/1).
struct GuardedStream {
    inner: TcpStream,
    slots: Arc<Slots>,
    activity: Arc<Activity>,
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Until the first byte arrives: when to give up waiting for it.
    first_byte_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl GuardedStream {
    fn touch(&self) {
        self.activity
            .last_ms
            .store(self.slots.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.first_byte_deadline = None;
                self.touch();
            }
            Poll::Pending => {
                if let Some(deadline) = &mut self.first_byte_deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing",
                    )));
                }
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl GuardedStream {
    /// After a write-side poll: start the stall clock on `Pending`, stop it
    /// on progress, and fail once it has run out.
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Pending => {
                let stall = self
                    .stalled_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
                if stall.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing for too long",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.stalled_since = None;
                self.touch();
                ready
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_stall(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_stall(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_stall(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future;

/// Accept connections until `shutdown`, serving each with `filter` under
/// the limits above; then let open requests finish.
pub(super) async fn serve<F>(
    listener: TcpListener,
    filter: F,
    slots: Arc<Slots>,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
    F::Future: Send,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower_service::Service;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_refusal_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, addr) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors (or a connection reset before it
                // was accepted): wait a little rather than spin.
                tracing::warn!("the web port could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.take(true).await else {
            if last_refusal_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    "the web port holds {} connections, its limit, none of them idle: \
                     refusing new ones (503) until some close",
                    slots.cap()
                );
                last_refusal_logged = Some(Instant::now());
            }
            refuse_busy(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = GuardedStream {
            inner: stream,
            slots: slots.clone(),
            activity: slot.activity.clone(),
            stalled_since: None,
            first_byte_deadline: Some(Box::pin(tokio::time::sleep(idle_timeout))),
        };
        let filter = filter.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(ClientAddr(addr));
            let mut routed = warp::service(filter.clone());
            async move {
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, routed.call(request)).await;
                answer.unwrap_or_else(|_| {
                    use warp::Reply;
                    Ok(warp::reply::with_status(
                        format!(
                            "the request was not read and answered within {} s",
                            REQUEST_TIMEOUT.as_secs()
                        ),
                        warp::http::StatusCode::REQUEST_TIMEOUT,
                    )
                    .into_response())
                })
            }
        });
        let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle_timeout);
        let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!("web connection from {addr} ended: {e}");
                    }
                }
                _ = slot.evicted() => {
                    tracing::debug!("web connection from {addr} closed to make room for another");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answer a connection there is no room for, without waiting on it.
fn refuse_busy(stream: TcpStream) {
    const BODY: &str = "the master has too many open web connections; try again shortly\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(cap: usize) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            started: Instant::now() - Duration::from_secs(10),
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_quiet_connection_makes_room() {
        let slots = slots(2);
        let a = slots.take(true).await.unwrap();
        let b = slots.take(true).await.unwrap();
        // `a` was last active long ago, `b` just now.
        a.activity.last_ms.store(0, Ordering::Relaxed);
        b.activity.last_ms.store(slots.now_ms(), Ordering::Relaxed);
        // `a` is told to go; its connection closes when it hears it.
        let a_id = a.id;
        let closing = tokio::spawn(async move {
            a.evicted().await;
            drop(a);
        });
        let c = slots
            .take(true)
            .await
            .expect("a quiet connection makes room");
        closing.await.unwrap();
        assert_eq!(slots.open(), 2);
        assert!(!slots.held.lock().unwrap().contains_key(&a_id));
        // Both left are active now: a fourth is refused.
        c.activity.last_ms.store(slots.now_ms(), Ordering::Relaxed);
        assert!(slots.take(true).await.is_none());
        drop(b);
        assert_eq!(slots.open(), 1);
        assert!(slots.take(true).await.is_some());
    }

    #[tokio::test]
    async fn websocket_sessions_are_never_evicted() {
        let slots = slots(1);
        let ws = slots.take(false).await.unwrap();
        ws.activity.last_ms.store(0, Ordering::Relaxed);
        assert!(slots.take(true).await.is_none());
    }
}
