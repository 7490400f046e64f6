//! Real HTTP over loopback for tests: a small client (HTTP/1.1 or h2c) and the answers it reads.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// An HTTP/1.1 client (or h2c with [`Client::h2c`]) with keep-alive.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Client {
    /// HTTP/2 with prior knowledge, over plain TCP.
    pub fn h2c() -> Self {
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends a request; `Err` when the connection failed or closed without an answer.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, hyper_util::client::legacy::Error> {
        let res = self.inner.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends `method url` with an optional `Authorization` and raw body; panics on a connection error.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        auth: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = auth {
            req = req.header(http::header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(body.into())).expect("valid request");
        self.send(req).await.expect("an answer")
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(&self, url: &str, auth: Option<&str>, body: &Value) -> Answer {
        self.call(Method::POST, url, auth, body.to_string()).await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Answer {
        self.call(Method::GET, url, None, Bytes::new()).await
    }
}
