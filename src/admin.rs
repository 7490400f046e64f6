//! The admin listener (`listen.admin`), kept apart from the proxy so that it can stay private:
//!
//! - `GET /metrics`: Prometheus text, every metric named `idenfy_gateway_*`;
//! - `GET /healthz`: 200 while the process runs (liveness);
//! - `GET /readyz`: 200 once the config is loaded and the proxy listener is bound, 503 while
//!   starting and once shutdown began (readiness: take the replica out of the Service);
//! - `GET /webhooks/dead`: the webhook deliveries given up (JSON, never a body), when the webhook
//!   listener is on;
//! - `POST /webhooks/dead/{id}/retry`: queues that dead letter again (202), or 404.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::Registry;

use crate::body::Body;
use crate::error::GatewayError;
use crate::webhooks::DeadLetters;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    pub ready: Arc<AtomicBool>,
    /// `None` without a webhook listener.
    pub webhooks: Option<DeadLetters>,
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl Admin {
    /// The dead-letter endpoints; `None` for any other request.
    async fn dead_letters(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let path = req.uri().path();
        let rest = path.strip_prefix("/webhooks/dead")?;
        // Without the webhook listener there are no dead letters to show: not a route here.
        let Some(dead) = &self.webhooks else {
            return Some(GatewayError::RouteNotFound.into_response());
        };
        let unavailable = |e: crate::webhooks::store::StoreError| {
            tracing::warn!(error = %e, "dead letters unreadable");
            GatewayError::WebhookStoreUnavailable.into_response()
        };
        let id = rest
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("/retry"))
            .filter(|id| !id.is_empty() && !id.contains('/'));
        Some(match (req.method(), rest, id) {
            (&Method::GET, "" | "/", _) => match dead.list().await {
                Ok(list) => json_response(
                    StatusCode::OK,
                    serde_json::json!({ "dead": list }).to_string(),
                ),
                Err(e) => unavailable(e),
            },
            (&Method::POST, _, Some(id)) => match dead.retry(id).await {
                Ok(true) => json_response(
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "retrying": id }).to_string(),
                ),
                Ok(false) => GatewayError::DeadLetterNotFound.into_response(),
                Err(e) => unavailable(e),
            },
            _ => GatewayError::RouteNotFound.into_response(),
        })
    }

    /// Answers one admin request, the dead-letter endpoints included.
    pub async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        match self.dead_letters(&req).await {
            Some(res) => res,
            None => self.handle(&req),
        }
    }

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
        hyper::service::service_fn(move |req| {
            let admin = self.clone();
            async move { Ok(admin.answer(req).await) }
        })
    }
}
