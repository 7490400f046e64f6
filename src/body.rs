//! The response body type of the whole stack: either bytes the gateway holds (its own answers,
//! coalesced and replayed copies, iDenfy's small answers read whole) or an upstream body streamed
//! from iDenfy's connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::upstream::UpstreamBody;

/// The boxed future every layer of the stack returns: a response, or the error `front` maps to one.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, crate::error::GatewayError>> + Send>>;

/// Pieces of a body gathered into one `Bytes`: a single piece (the usual case) is kept as it
/// came, without a copy or an allocation; several are joined.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    first: Option<Bytes>,
    joined: Option<bytes::BytesMut>,
}

impl Joined {
    pub(crate) fn push(&mut self, data: Bytes) {
        match (&self.first, &mut self.joined) {
            (None, _) => self.first = Some(data),
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            (Some(first), None) => {
                let mut both = bytes::BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                self.joined = Some(both);
            }
        }
    }

    /// What was gathered; `None` if nothing was.
    pub(crate) fn finish(self) -> Option<Bytes> {
        self.joined.map(bytes::BytesMut::freeze).or(self.first)
    }
}

/// A response body. Request bodies travel the stack as plain [`Bytes`]: they are read once,
/// bounded by `limits.max_body`, so that a retry or a coalesced flight can send them again.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    /// Boxed: a streamed body is rare (over 64 KiB, or chunked), and inline it would make every
    /// response five times larger to move through the layers (184 bytes instead of 32).
    Upstream(Box<UpstreamBody>),
}

impl Body {
    /// A body of known bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Body {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body {
            kind: Kind::Full(None),
        }
    }

    /// An upstream body, streamed.
    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        Body {
            kind: Kind::Upstream(Box::new(body)),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::full(bytes)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    /// Only a streamed upstream body fails: the connection broke, or the body was malformed.
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_pieces_and_keeps_a_single_one_as_it_came() {
        assert_eq!(Joined::default().finish(), None);
        let one = Bytes::from_static(b"abc");
        let mut single = Joined::default();
        single.push(one.clone());
        let kept = single.finish().unwrap();
        assert_eq!(kept.as_ptr(), one.as_ptr());
        let mut several = Joined::default();
        for piece in [&b"ab"[..], b"c", b"def"] {
            several.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(&several.finish().unwrap()[..], b"abcdef");
    }
}
