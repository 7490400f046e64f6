//! Reading a small upstream answer's body (to find its `identifier`, or to keep it across a
//! retry) and putting it back byte for byte, for the retry loop and the account limit.

use bytes::Bytes;
use http::Response;
use http_body::Body as _;
use http_body_util::BodyExt;

use super::policy::error_identifier;
pub use super::policy::needs_identifier;
use crate::body::Body;
use crate::error::GatewayError;

/// The largest body read: 64 KiB. iDenfy's error bodies are a few hundred bytes. A chunked answer
/// of up to 64 KiB arrives already read whole by the upstream client, with a known length, and is
/// read here like a `content-length` one. A body that is larger, or still streaming (a chunked one
/// past 64 KiB, or one that runs to the connection's end), is not read: it streams through
/// untouched and the answer is classified by its status alone (a 400 of that kind is final).
///
/// No larger than the upstream client's small-body threshold: a body this small arrives already
/// read whole, within the attempt's bound, so reading it here never waits on the network and the
/// retry loop needs no timer of its own (`tests/upstream.rs` holds the two to this).
pub const MAX_INSPECT_BODY: u64 = 64 * 1024;

/// Buffers a body of known length up to [`MAX_INSPECT_BODY`]: the answer with its body as
/// [`Body::full`] (same bytes, same headers) and a copy of those bytes, or the answer untouched.
pub async fn buffer_small(
    res: Response<Body>,
) -> Result<(Response<Body>, Option<Bytes>), GatewayError> {
    let small = res
        .body()
        .size_hint()
        .upper()
        .is_some_and(|len| len <= MAX_INSPECT_BODY);
    if !small {
        return Ok((res, None));
    }
    let (parts, body) = res.into_parts();
    // A body that breaks while read is a connection that broke after the request was sent.
    let bytes = body
        .collect()
        .await
        .map_err(|_| GatewayError::UpstreamProtocol)?
        .to_bytes();
    Ok((
        Response::from_parts(parts, Body::full(bytes.clone())),
        Some(bytes),
    ))
}

/// The answer and, when its classification needs it and the body is small, its `identifier`.
/// Callers test [`needs_identifier`] first, so that the usual answer (a 2xx) does not even
/// build this future.
pub async fn with_identifier(
    res: Response<Body>,
) -> Result<(Response<Body>, Option<String>), GatewayError> {
    if !needs_identifier(res.status()) {
        return Ok((res, None));
    }
    let (res, bytes) = buffer_small(res).await?;
    Ok((res, bytes.as_deref().and_then(error_identifier)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    async fn bytes(res: Response<Body>) -> bytes::Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    fn answer(status: u16, body: &'static [u8]) -> Response<Body> {
        let mut res = Response::new(Body::full(body));
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        res.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        res
    }

    #[tokio::test]
    async fn reads_a_400_identifier_and_keeps_the_body() {
        let body = br#"{"identifier":"TOO_MANY_REQUESTS","message":"limit"}"#;
        let (res, id) = with_identifier(answer(400, body)).await.unwrap();
        assert_eq!(id.as_deref(), Some("TOO_MANY_REQUESTS"));
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(&bytes(res).await[..], &body[..]);
    }

    #[tokio::test]
    async fn other_statuses_are_not_read() {
        let (res, id) = with_identifier(answer(503, b"down")).await.unwrap();
        assert_eq!(id, None);
        assert_eq!(&bytes(res).await[..], b"down");
    }

    #[tokio::test]
    async fn a_large_body_is_left_alone() {
        let big = vec![b' '; MAX_INSPECT_BODY as usize + 1];
        let mut res = Response::new(Body::full(big.clone()));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        let (res, copy) = buffer_small(res).await.unwrap();
        assert!(copy.is_none());
        assert_eq!(bytes(res).await.len(), big.len());
    }
}
