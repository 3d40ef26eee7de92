//! A connection's bytes: plain TCP, or TLS over TCP.
//!
//! One enum rather than generics, so the HTTP and WebSocket code is compiled
//! once, and the plain case stays small (the reactor handle itself; the TLS
//! state is boxed and only exists on HTTPS connections).
//!
//! Every socket is read through one scratch buffer shared by the whole
//! thread, `READ_AHEAD_BYTES` at a time, whatever the reader asked for:
//! tungstenite asks for 256 bytes (`ws::READ_BUFFER_BYTES`, its buffer that
//! every idle peer keeps), so a 4 KB offer would otherwise take seventeen
//! system calls. What the reader did not take waits in the connection's own
//! `ahead`, which exists only until it is taken.
//!
//! TLS is rustls's unbuffered connection driven here, not its buffered one:
//! that one keeps a 4 KiB receive buffer in every connection for as long as
//! it lives, where an idle `wss` peer here holds no buffer at all. Bytes of
//! a record not yet whole, decrypted bytes not yet read and encrypted bytes
//! not yet sent each get a buffer only while there are some.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use async_net::TcpStream;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus};
use rustls::ServerConfig;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;

/// Bytes read from a socket at a time, into the thread's scratch.
pub const READ_AHEAD_BYTES: usize = 16 * 1024;

thread_local! {
    /// The one read buffer of the daemon's thread (made at the first read).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The one buffer TLS writes are encrypted into, sent from at once; a
    /// connection copies only what the socket did not take. At most
    /// `SEAL_BYTES` and four records' overhead.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The most bytes of a write encrypted at a time, as up to four full TLS
/// records sent in one system call. A longer write is taken in parts, as a
/// socket takes it. (One record at a time split each of tungstenite's
/// batches, which pass 16 KiB by a frame, into two sends, and each loopback
/// send also wakes the reader: 4 KB offers over `wss`, 8 pairs, cost 12.4 µs
/// of server CPU each instead of 8.1.)
pub const SEAL_BYTES: usize = 64 * 1024;

/// The most encrypted bytes a TLS connection holds that its socket has not
/// taken, before a write waits for it (rustls's own buffered connection
/// allows as much): a burst goes on while the socket drains, and a reader
/// that stops costs at most this beside its outbox.
pub const MAX_UNSENT_TLS_BYTES: usize = 64 * 1024;

pub enum Stream {
    Plain(Plain),
    Tls(Box<Tls>),
}

impl Stream {
    pub fn plain(stream: TcpStream) -> Stream {
        Stream::Plain(Plain { socket: stream.into(), ahead: ReadAhead::default() })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
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

    fn poll_socket(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        poll_socket(&self.socket, cx, buf)
    }
}

/// One read from the socket into `buf`, as `async_net` makes it.
fn poll_socket(socket: &Async<std::net::TcpStream>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    loop {
        match (&mut socket.get_ref()).read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => ready!(socket.poll_readable(cx))?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return Poll::Ready(result),
        }
    }
}

/// A TLS connection: rustls's unbuffered server connection over the socket.
pub struct Tls {
    socket: Arc<Async<std::net::TcpStream>>,
    conn: UnbufferedServerConnection,
    /// The front of a record that has not wholly arrived yet. Bounded by
    /// rustls: at most one record (it refuses a record header over 16 KiB
    /// plus 2 KiB) and one read; in the handshake, one handshake message
    /// (it refuses one over 64 KiB, and the handshake has `HEAD_TIMEOUT`).
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet.
    plain: Chunks,
    /// Encrypted bytes not yet sent, in order.
    outgoing: Chunks,
    /// The peer sent close_notify: reads end.
    peer_closed: bool,
    /// Reached when the handshake is done; rustls may send data.
    open: bool,
    close_notify_sent: bool,
}

/// What to ask of rustls once it has taken in what arrived.
enum Ask<'a> {
    Nothing,
    /// Encrypt the bytes into the buffer, from its start.
    Encrypt(&'a [u8], &'a mut Vec<u8>),
    CloseNotify,
}

impl Tls {
    /// The server side of a TLS handshake on `tcp`, until the connection
    /// can carry data.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Stream> {
        let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
        let mut tls = Tls {
            socket: tcp.into(),
            conn,
            incoming: Vec::new(),
            plain: Chunks::default(),
            outgoing: Chunks::default(),
            peer_closed: false,
            open: false,
            close_notify_sent: false,
        };
        std::future::poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if self.open {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            let n = self.plain.take(buf);
            if n > 0 || buf.is_empty() || self.peer_closed {
                return Poll::Ready(Ok(n));
            }
            if self.poll_receive(cx)?.is_pending() {
                // Nothing more has come: the burst is over, and a waiting
                // connection holds no buffer.
                self.plain = Chunks::default();
                return Poll::Pending;
            }
            // What rustls had to answer (a key update) goes out now if the
            // socket takes it, else with the next write.
            self.send_now()?;
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if !self.outgoing.is_empty() {
            match self.write_out() {
                // Backpressure: wait while too much is still unsent.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if self.outgoing.len() >= MAX_UNSENT_TLS_BYTES {
                        ready!(self.poll_send(cx))?;
                    }
                }
                result => result?,
            }
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let buf = &buf[..buf.len().min(SEAL_BYTES)];
        SEALED.with_borrow_mut(|sealed| {
            let (_, length) = self.turn(None, Ask::Encrypt(buf, sealed))?;
            let sealed = &sealed[..length];
            // Whatever rustls had queued before goes first.
            let sent = if self.outgoing.is_empty() { write_now(&self.socket, sealed)? } else { 0 };
            if sent < sealed.len() {
                self.outgoing.push(sealed[sent..].to_vec());
            }
            self.send_now()?;
            Poll::Ready(Ok(buf.len()))
        })
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.turn(None, Ask::CloseNotify)?;
        }
        ready!(self.poll_send(cx))?;
        Poll::Ready(self.socket.get_ref().shutdown(Shutdown::Write))
    }

    /// Read what the socket has, through the thread's scratch, and let
    /// rustls take it in.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.resize(READ_AHEAD_BYTES, 0);
            let read = ready!(poll_socket(&self.socket, cx, scratch))?;
            if read == 0 {
                let error = if self.open {
                    "peer closed without a TLS close_notify"
                } else {
                    "peer closed during the TLS handshake"
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, error)));
            }
            let mut from = 0;
            if !self.incoming.is_empty() {
                // First the record begun in an earlier read, with only the
                // bytes it still lacks.
                from = record_rest(&self.incoming, &scratch[..read]).min(read);
                self.incoming.extend_from_slice(&scratch[..from]);
                let (used, _) = self.turn(None, Ask::Nothing)?;
                self.incoming.drain(..used);
                if !self.incoming.is_empty() {
                    // Not whole yet, or a handshake message that rustls
                    // joins across records: the rest waits here too.
                    self.incoming.extend_from_slice(&scratch[from..read]);
                    let (used, _) = self.turn(None, Ask::Nothing)?;
                    self.incoming.drain(..used);
                    return Poll::Ready(Ok(()));
                }
                self.incoming = Vec::new();
            }
            // Nearly always: whole records, taken in where they were read.
            let input = &mut scratch[from..read];
            let (used, _) = self.turn(Some(input), Ask::Nothing)?;
            self.incoming.extend_from_slice(&input[used..]);
            Poll::Ready(Ok(()))
        })
    }

    /// Run rustls over `input` (else what waits in `incoming`) until it
    /// needs more from the peer, then do what `ask` asks; returns how many
    /// bytes of the input it is done with, and how many it encrypted into
    /// `Ask::Encrypt`'s buffer. Decrypted bytes go to `plain`,
    /// bytes for the peer to `outgoing`. On an error, the alert rustls
    /// made for the peer is sent if the socket takes it at once.
    fn turn(&mut self, input: Option<&mut [u8]>, ask: Ask<'_>) -> io::Result<(usize, usize)> {
        let result = self.turn_inner(input, ask);
        if result.is_err() {
            if let Ok(ConnectionState::EncodeTlsData(mut alert)) = self.conn.process_tls_records(&mut []).state {
                let _ = encode(&mut alert, &mut self.outgoing);
            }
            let _ = self.send_now();
        }
        result
    }

    fn turn_inner(&mut self, input: Option<&mut [u8]>, mut ask: Ask<'_>) -> io::Result<(usize, usize)> {
        let Tls { conn, incoming, plain, outgoing, peer_closed, open, .. } = self;
        let input = match input {
            Some(input) => input,
            None => incoming.as_mut_slice(),
        };
        let mut used = 0;
        let mut sealed_length = 0;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut input[used..]);
            let done = match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        plain.push(record.payload.to_vec());
                    }
                    false
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut data, outgoing)?;
                    false
                }
                // `outgoing` keeps them until they are sent.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    false
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    false
                }
                ConnectionState::BlockedHandshake => true,
                ConnectionState::Closed => {
                    *peer_closed = true;
                    true
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    *open = true;
                    match std::mem::replace(&mut ask, Ask::Nothing) {
                        Ask::Nothing => {}
                        Ask::Encrypt(bytes, sealed) => sealed_length = seal(sealed, |out| traffic.encrypt(bytes, out))?,
                        Ask::CloseNotify => {
                            let mut alert = Vec::new();
                            let length = seal(&mut alert, |out| traffic.queue_close_notify(out))?;
                            alert.truncate(length);
                            outgoing.push(alert);
                        }
                    }
                    true
                }
                // Early data is off (rustls's default), so never.
                _ => return Err(invalid("unexpected TLS state")),
            };
            used += discard;
            if done {
                break;
            }
        }
        if !matches!(ask, Ask::Nothing) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "TLS connection cannot carry data"));
        }
        Ok((used, sealed_length))
    }

    /// Send what the socket takes now, without waiting.
    fn send_now(&mut self) -> io::Result<()> {
        match self.write_out() {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(()),
            result => result,
        }
    }

    /// Send everything in `outgoing`, waiting for the socket as needed.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.write_out() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => ready!(self.socket.poll_writable(cx))?,
                result => return Poll::Ready(result),
            }
        }
    }

    /// `WouldBlock` if the socket did not take all of `outgoing`.
    fn write_out(&mut self) -> io::Result<()> {
        let outgoing = &mut self.outgoing;
        while let Some(chunk) = outgoing.chunks.front() {
            let sent = write_now(&self.socket, &chunk[outgoing.sent..])?;
            outgoing.sent += sent;
            if outgoing.sent < chunk.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            outgoing.bytes -= chunk.len();
            outgoing.sent = 0;
            outgoing.chunks.pop_front();
        }
        // Sent: an idle connection keeps no buffer.
        *outgoing = Chunks::default();
        Ok(())
    }
}

/// How many bytes of `next` complete the TLS record that `front` begins
/// (from the length in its 5-byte header).
fn record_rest(front: &[u8], next: &[u8]) -> usize {
    let mut header = [0u8; 5];
    for (slot, byte) in header.iter_mut().zip(front.iter().chain(next)) {
        *slot = *byte;
    }
    (5 + usize::from(u16::from_be_bytes([header[3], header[4]]))).saturating_sub(front.len())
}

/// Bytes waiting, in order (decrypted ones for the reader, encrypted ones
/// for the socket): one allocation per record or write, as in rustls's own
/// buffers. (Growing one buffer per connection and freeing it after a
/// burst made glibc give the top of its heap back to the kernel and fault
/// it in again at every burst: 89,000 page faults in 6 s of 4 KB offers
/// over `wss`, where rustls's buffered connection had 10.)
#[derive(Default)]
struct Chunks {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already taken or sent.
    sent: usize,
    /// Bytes in all chunks, taken or not.
    bytes: usize,
}

impl Chunks {
    /// Copy what is waiting into `buf`; 0 if nothing is.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while let Some(chunk) = self.chunks.front() {
            let waiting = &chunk[self.sent..];
            let now = waiting.len().min(buf.len() - n);
            buf[n..n + now].copy_from_slice(&waiting[..now]);
            n += now;
            self.sent += now;
            if self.sent < chunk.len() {
                break;
            }
            self.bytes -= chunk.len();
            self.sent = 0;
            self.chunks.pop_front();
        }
        n
    }

    fn push(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes not yet sent.
    fn len(&self) -> usize {
        self.bytes - self.sent
    }
}

/// Queue a handshake record (or an alert) in `outgoing`.
fn encode(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    outgoing: &mut Chunks,
) -> io::Result<()> {
    let mut record = Vec::new();
    encode_into(data, &mut record)?;
    if !record.is_empty() {
        outgoing.push(record);
    }
    Ok(())
}

fn encode_into(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, rustls::server::ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    let start = outgoing.len();
    let needed = match data.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
        Err(error) => return Err(invalid(error)),
    };
    outgoing.resize(start + needed, 0);
    let written = data.encode(&mut outgoing[start..]).map_err(invalid)?;
    outgoing.truncate(start + written);
    Ok(())
}

/// Encrypt with `write` into `sealed` from its start, first making it as
/// large as rustls says it must be (it stays so); returns the length.
fn seal(sealed: &mut Vec<u8>, mut write: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>) -> io::Result<usize> {
    match write(sealed) {
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            sealed.resize(required_size, 0);
            write(sealed).map_err(invalid)
        }
        result => result.map_err(invalid),
    }
}

/// Send what the socket takes of `bytes` now, without waiting.
fn write_now(socket: &Async<std::net::TcpStream>, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match (&mut socket.get_ref()).write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => return Err(error),
        }
    }
    Ok(sent)
}

fn invalid(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(plain) => plain.poll_read(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(plain) => Pin::new(&mut &*plain.socket).poll_write(cx, buf),
            Stream::Tls(tls) => tls.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(plain) => Pin::new(&mut &*plain.socket).poll_flush(cx),
            Stream::Tls(tls) => tls.poll_send(cx),
        }
    }

    /// Plain: shut down the sending half. TLS: send close_notify, then the same.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(plain) => Poll::Ready(plain.socket.get_ref().shutdown(Shutdown::Write)),
            Stream::Tls(tls) => tls.poll_close(cx),
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
