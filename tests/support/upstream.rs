//! A scripted server on `127.0.0.1:0` (an upstream, or a webhook receiver): answers each request
//! with the next scripted reply (or the default one) and records what it received.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the upstream (or a webhook receiver) saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// What the upstream does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    /// Never answers.
    Hang,
    /// Waits for the gate, then replies.
    Gated(Arc<Notify>, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }
}

struct State {
    received: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    arrived: Notify,
    /// Connections accepted.
    connections: AtomicUsize,
}

/// The running upstream.
#[derive(Clone)]
pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Serves on `listener` (e.g. a socket that refused connections until now).
    pub fn start_on(listener: TcpListener) -> MockUpstream {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::json(200, r#"{"ok":true}"#)),
            arrived: Notify::new(),
            connections: AtomicUsize::new(0),
        });
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        MockUpstream { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.state.received.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.state.arrived.notified();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    state.received.lock().unwrap().push(Recorded {
        method: parts.method,
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
        at: std::time::Instant::now(),
    });
    state.arrived.notify_waiters();
    let next = state.script.lock().unwrap().pop_front();
    let mut reply = next.unwrap_or_else(|| state.default.lock().unwrap().clone());
    loop {
        match reply {
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut res = Response::new(Full::new(body));
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                for (k, v) in headers {
                    res.headers_mut().append(k, v.parse().unwrap());
                }
                return Ok(res);
            }
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Gated(gate, inner) => {
                gate.notified().await;
                reply = *inner;
            }
        }
    }
}

/// An upstream that refuses every connection: a loopback socket bound and never listening. Keep
/// the socket while the test runs: the port stays taken, so another test running beside this one
/// cannot be given it (a listener bound and dropped frees its port for anyone).
pub fn refusing_upstream() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("loopback"))
        .expect("bind");
    let url = format!("http://{}", socket.local_addr().expect("bound address"));
    (socket, url)
}
