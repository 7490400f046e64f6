//! Lingering close (nginx's `lingering_close`): a connection that ends while its client may still
//! be sending (after a refusal, or with a request body left unread) shuts its write side first,
//! then reads and drops what still comes until the client closes, falls quiet for [`QUIET`], or
//! [`TOTAL`] has passed. A socket closed with unread bytes is answered by the kernel with a
//! reset, and the client can lose the answer already on its way to it (a 413 seen as a broken
//! pipe). The drain is bounded by time, not by bytes: a client uploading a large body at full
//! speed still gets to read its answer.
//!
//! The connections handed to hyper close the same way ([`super::handover::Handed`]).

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A lingering connection closes once the client has sent nothing for this long (nginx's
/// `lingering_timeout`, 5 s).
pub const QUIET: Duration = Duration::from_secs(5);
/// ... and at the latest this long after it began to linger (nginx's `lingering_time`, 30 s).
pub const TOTAL: Duration = Duration::from_secs(30);
/// Least room for one read of what is dropped.
const DROP_BUF: usize = 8 * 1024;

/// Shuts the write side of `io`, then reads into `buf` (cleared each time) and drops what comes,
/// until EOF, an error, [`QUIET`] without data, [`TOTAL`] in all, or `cut` resolving (the
/// connection evicted, the gateway stopping).
pub async fn linger<T>(io: &mut T, buf: &mut BytesMut, cut: impl Future<Output = ()>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if io.shutdown().await.is_err() {
        return;
    }
    if buf.capacity() < DROP_BUF {
        buf.reserve(DROP_BUF);
    }
    let drain = async {
        loop {
            buf.clear();
            match tokio::time::timeout(QUIET, io.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(TOTAL, drain) => {}
        () = cut => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closes_once_the_client_falls_quiet() {
        let (mut client, mut server) = duplex(1024);
        let started = Instant::now();
        let lingering = tokio::spawn(async move {
            linger(&mut server, &mut BytesMut::new(), std::future::pending()).await;
        });
        client.write_all(b"late bytes").await.unwrap();
        let mut rest = Vec::new();
        // The write side is shut at once: the client reads EOF, and the gateway still reads.
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        lingering.await.unwrap();
        assert_eq!(started.elapsed(), QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn drains_far_more_than_a_mebibyte_from_a_client_that_keeps_sending() {
        let (mut client, mut server) = duplex(64 * 1024);
        let lingering = tokio::spawn(async move {
            linger(&mut server, &mut BytesMut::new(), std::future::pending()).await;
        });
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            client.write_all(&chunk).await.unwrap();
        }
        client.shutdown().await.unwrap();
        lingering.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_total_time_on_a_client_that_trickles() {
        let (mut client, mut server) = duplex(1024);
        let started = Instant::now();
        let lingering = tokio::spawn(async move {
            linger(&mut server, &mut BytesMut::new(), std::future::pending()).await;
        });
        let trickle = tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(QUIET / 2).await;
            }
        });
        lingering.await.unwrap();
        assert_eq!(started.elapsed(), TOTAL);
        trickle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_once_when_cut() {
        let (_client, mut server) = duplex(1024);
        let started = Instant::now();
        linger(&mut server, &mut BytesMut::new(), async {}).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
