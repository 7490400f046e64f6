//! The admin listener (`listen.admin`), kept apart from the proxy so that it can stay private:
//!
//! - `GET /metrics`: Prometheus text, every metric named `idenfy_gateway_*`;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 once the config is loaded and the proxy listener is bound, 503 while
//!   starting and once shutdown began (readiness: take the replica out of the Service).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::Registry;

use crate::body::Body;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    /// Answers one admin request.
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                crate::metrics::render(&self.registry),
            ),
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            (&Method::GET, "/readyz") if self.ready.load(Ordering::Acquire) => {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            }
            (&Method::GET, "/readyz") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".to_string(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut res = Response::new(Body::full(body));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        res
    }

    /// The admin service for hyper.
    pub fn service(
        self,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
           + Send
           + 'static {
        hyper::service::service_fn(move |req| std::future::ready(Ok(self.handle(&req))))
    }
}
