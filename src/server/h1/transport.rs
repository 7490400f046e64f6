//! The sockets the loop serves: plain TCP, and rustls over TCP (`listen.tls_cert_file`). The
//! loop is generic over [`Transport`] and monomorphised for each: the plain path keeps its
//! readiness-driven reads and its non-blocking first write, with no indirection per connection.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{MIN_READ, READ_BUF};
use crate::identify::ClientCertNames;

fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_BUF);
    }
}

/// A connection's byte stream, as the loop reads and writes it.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether written bytes may wait in the transport until it is flushed (TLS records).
    const BUFFERS_WRITES: bool;

    /// One read into the spare room of `buf`, when there is something to read; `buf` is given
    /// room first when less than [`MIN_READ`] is spare.
    fn poll_read_buf(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>>;

    /// Writes what it can of `buf` now, without waiting; `WouldBlock` when nothing can go now
    /// (or the transport cannot tell without a task to wake).
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// The DNS names of the client certificate the handshake verified (mutual TLS).
    fn client_cert(&self) -> Option<ClientCertNames>;
}

impl Transport for TcpStream {
    const BUFFERS_WRITES: bool = false;

    fn poll_read_buf(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_read_ready(cx))?;
        // Only now: a connection waiting quietly holds no more buffer than it has.
        make_room(buf);
        // Through tokio's `poll_read`, not `try_read_buf`: a read that fills less than the room
        // it was given drained the socket, and `poll_read` then clears the readiness. The next
        // poll (the loop watching for a client that leaves while its request is upstream, or
        // the next request) waits for the next edge instead of finding the socket empty with a
        // `recvfrom` that returns `EAGAIN`: one system call a request.
        pin!(self.read_buf(buf)).poll(cx)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn client_cert(&self) -> Option<ClientCertNames> {
        None
    }
}

impl Transport for TlsStream<TcpStream> {
    const BUFFERS_WRITES: bool = true;

    /// rustls may hold decrypted bytes the socket no longer signals: read through it, not on
    /// the socket's readiness.
    fn poll_read_buf(
        &mut self,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        make_room(buf);
        pin!(self.read_buf(buf)).poll(cx)
    }

    fn try_write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn client_cert(&self) -> Option<ClientCertNames> {
        crate::tls::client_cert_names(self.get_ref().1)
    }
}
