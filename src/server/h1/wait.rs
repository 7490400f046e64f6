//! The waits of a connection of the loop, as poll functions it combines in one future: for
//! more of a head (with its timer, the stop signal and eviction), and for a client that leaves
//! while its answer is pending. Each is cheap to poll again with the same waker.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::BytesMut;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::transport::Transport;
use super::Stopping;

/// Polls `stopping` only when it may have changed: when something was sent on `stop` (after the
/// receiver's own version: a send the clone saw already is caught by the first poll), or when
/// the task's waker is not the one it holds. Otherwise it is pending and wakes this task on a
/// send; polling it again would only take the channel's waiter lock, once per request.
pub fn poll_stopping(
    stopping: &mut Stopping,
    polled_with: &mut Option<Waker>,
    stop: &watch::Receiver<bool>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let same_waker = polled_with
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()));
    if same_waker && matches!(stop.has_changed(), Ok(false)) {
        return Poll::Pending;
    }
    if !same_waker {
        *polled_with = Some(cx.waker().clone());
    }
    stopping.as_mut().poll(cx)
}

/// Ready once `until` has passed. The timer is moved earlier when it must, and moved later only
/// when it fires before `until`: waits that each end before the timer fires leave it alone.
pub fn poll_until(timer: &mut Pin<Box<Sleep>>, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
    if timer.deadline() > until {
        timer.as_mut().reset(until);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if timer.deadline() >= until {
            return Poll::Ready(());
        }
        timer.as_mut().reset(until);
    }
    Poll::Pending
}

/// Ready when the client closed or reset the connection. What it sends meanwhile (pipelined
/// requests) is kept in `buf`; once `buf` holds `cap` bytes the socket is left alone, and this
/// stays pending. The socket is read only when it is readable: while the client waits quietly,
/// this is one readiness poll.
pub fn poll_gone<T: Transport>(
    stream: &mut T,
    buf: &mut BytesMut,
    cap: usize,
    cx: &mut Context<'_>,
) -> Poll<()> {
    while buf.len() < cap {
        match ready!(stream.poll_read_buf(buf, cx)) {
            Ok(0) | Err(_) => return Poll::Ready(()),
            Ok(_) => {}
        }
    }
    Poll::Pending
}
