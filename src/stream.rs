//! A connection's bytes: plain TCP, or TLS over TCP.
//!
//! One enum rather than generics, so the HTTP and WebSocket code is compiled
//! once, and the plain case stays small (the reactor handle itself; the TLS
//! state, about 1 KB, is boxed and only exists on HTTPS connections).
//!
//! A plain socket is read through one scratch buffer shared by the whole
//! thread, `READ_AHEAD_BYTES` at a time, whatever the reader asked for:
//! tungstenite asks for 256 bytes (`ws::READ_BUFFER_BYTES`, its buffer that
//! every idle peer keeps), so a 4 KB offer would otherwise take seventeen
//! system calls. What the reader did not take waits in the connection's own
//! `ahead`, which exists only until it is taken. (TLS reads are buffered by
//! rustls already.)

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use async_net::TcpStream;
use futures_rustls::server::TlsStream;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;

/// Bytes read from a plain socket at a time, into the thread's scratch.
pub const READ_AHEAD_BYTES: usize = 16 * 1024;

thread_local! {
    /// The one read buffer of the daemon's thread (made at the first read).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub enum Stream {
    Plain(Plain),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    pub fn plain(stream: TcpStream) -> Stream {
        Stream::Plain(Plain { socket: stream.into(), ahead: ReadAhead::default() })
    }
}

/// A plain socket: the reactor's handle itself (8 bytes, where `async_net`'s
/// `TcpStream` around it is 120, in every idle peer's task) and what was
/// read ahead.
pub struct Plain {
    socket: Arc<Async<std::net::TcpStream>>,
    ahead: ReadAhead,
}

/// Bytes read from a socket that its reader has not taken yet. Empty (and
/// holding no memory) nearly always.
#[derive(Default)]
pub struct ReadAhead {
    bytes: Vec<u8>,
    taken: usize,
}

impl ReadAhead {
    /// Copy what is waiting into `buf`; 0 if nothing is.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let waiting = &self.bytes[self.taken..];
        let n = waiting.len().min(buf.len());
        buf[..n].copy_from_slice(&waiting[..n]);
        self.taken += n;
        if self.taken == self.bytes.len() {
            *self = ReadAhead::default();
        }
        n
    }
}

impl Plain {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let waiting = self.ahead.take(buf);
        if waiting > 0 {
            return Poll::Ready(Ok(waiting));
        }
        if buf.len() >= READ_AHEAD_BYTES {
            return self.poll_socket(cx, buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.resize(READ_AHEAD_BYTES, 0);
            let read = ready!(self.poll_socket(cx, scratch))?;
            let n = read.min(buf.len());
            buf[..n].copy_from_slice(&scratch[..n]);
            if read > n {
                self.ahead.bytes.extend_from_slice(&scratch[n..read]);
            }
            Poll::Ready(Ok(n))
        })
    }

    /// One read from the socket into `buf`, as `async_net` makes it.
    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match (&mut self.socket.get_ref()).read(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => ready!(self.socket.poll_readable(cx))?,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(plain) => plain.poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(plain) => Pin::new(&mut &*plain.socket).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(plain) => Pin::new(&mut &*plain.socket).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    /// Plain: shut down the sending half. TLS: send close_notify, then the same.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(plain) => Poll::Ready(plain.socket.get_ref().shutdown(Shutdown::Write)),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

/// `Some(output)` if `future` finishes within `limit`, else `None`: every
/// wait on a client goes through this, so none is unbounded.
pub async fn with_timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// A future that is polled only after one of the wakers it handed out has
/// fired, however often the task around it is polled. `LocalExecutor::run`
/// polls the future it is given every time it wakes to run any task, and
/// `or` polls both of its futures whenever either was woken.
pub struct PolledWhenWoken<F> {
    future: Pin<Box<F>>,
    waker: Arc<Woken>,
}

/// The waker `PolledWhenWoken` hands its future (wakers must be `Send` and
/// `Sync`, so an atomic and a mutex, although the daemon has one thread).
struct Woken {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl<F: Future> PolledWhenWoken<F> {
    pub fn new(future: F) -> Self {
        let waker = Arc::new(Woken { woken: AtomicBool::new(true), outer: Mutex::new(None) });
        PolledWhenWoken { future: Box::pin(future), waker }
    }
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(outer) = self.outer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
            outer.wake_by_ref();
        }
    }
}

impl<F: Future> Future for PolledWhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        {
            // First where to pass a wake on, then whether one came: a wake
            // in between is passed on, not lost.
            let mut outer = this.waker.outer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !outer.as_ref().is_some_and(|outer| outer.will_wake(cx.waker())) {
                *outer = Some(cx.waker().clone());
            }
        }
        if !this.waker.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.waker.clone());
        this.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}
