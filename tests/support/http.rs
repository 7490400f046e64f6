//! Real HTTP over loopback for tests: a small client, and a [`Recorder`] server that records what
//! it receives and answers from a script (a webhook receiver, or a scripted upstream).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::{TokioExecutor, TokioIo};
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
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
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
    ) -> Result<Reply, hyper_util::client::legacy::Error> {
        let res = self.inner.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(Reply {
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
    ) -> Reply {
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
    pub async fn post_json(&self, url: &str, auth: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, url, auth, body.to_string()).await
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.call(Method::GET, url, None, Bytes::new()).await
    }
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP server on `127.0.0.1:0` that records every request and answers with the next scripted
/// status (200 with `{}` once the script is empty). The server stops when the Recorder is dropped.
pub struct Recorder {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (rec, scr) = (received.clone(), script.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rec, scr) = (rec.clone(), scr.clone());
                let service =
                    hyper::service::service_fn(move |req| record(req, rec.clone(), scr.clone()));
                tokio::spawn(
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        Recorder {
            addr,
            received,
            script,
            task,
        }
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers the next requests with these statuses, in order.
    pub fn answer_with(&self, statuses: &[StatusCode]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    req: Request<Incoming>,
    received: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    received.lock().unwrap().push(Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    let status = script.lock().unwrap().pop_front().unwrap_or(StatusCode::OK);
    let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
    *res.status_mut() = status;
    Ok(res)
}
