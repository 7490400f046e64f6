//! Validate: refuses a token request that iDenfy would refuse, and finds its `clientId`.
//!
//! Sits after `route` (it reads the [`Route`] extension) and before `dedup` (which keys on the
//! [`ClientId`] extension set here): a request iDenfy would answer with 400 is answered locally, in
//! iDenfy's shape, without spending quota. Only token-creating routes are parsed; every other
//! request passes through untouched. With `[validation] enabled = false` nothing is refused (iDenfy
//! decides), but the `clientId` is still found, because dedup needs it.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use tower::{Layer, Service};

use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::{ClientId, ContextExt, Route, RouteKind};
use crate::error::GatewayError;
use crate::idenfy::{self, FieldError, Schema};

/// What the layer does with a token request's body: the `clientId` to hand on (if any), or the
/// rule the body breaks. With `enabled = false` it never refuses.
pub fn inspect(
    kind: RouteKind,
    body: &[u8],
    enabled: bool,
) -> Result<Option<ClientId>, FieldError> {
    let map = match idenfy::parse_body(body) {
        Ok(map) => map,
        Err(_) if !enabled => return Ok(None),
        Err(e) => return Err(e),
    };
    if enabled {
        if let Some(schema) = schema(kind) {
            schema.check(&map)?;
        }
    }
    Ok(idenfy::client_id(&map).map(|id| ClientId(Arc::from(id.as_ref()))))
}

fn schema(kind: RouteKind) -> Option<&'static Schema> {
    match kind {
        RouteKind::KycToken => Some(&idenfy::KYC_TOKEN),
        RouteKind::KybToken => Some(&idenfy::KYB_TOKEN),
        RouteKind::Other => None,
    }
}

/// `idenfy_gateway_validation_rejections_total{route,field}`: requests refused by validation.
/// `route` is the route template label; `field` a field name from iDenfy's fixed schema, or `body`.
#[derive(Debug, Clone)]
pub struct ValidationMetrics {
    rejections: IntCounterVec,
}

impl ValidationMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let rejections = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_validation_rejections_total",
                "Token requests refused locally because iDenfy would refuse them, by field",
            ),
            &["route", "field"],
        )?;
        registry.register(Box::new(rejections.clone()))?;
        Ok(ValidationMetrics { rejections })
    }

    fn rejected(&self, route: &Route, field: &str) {
        self.rejections
            .with_label_values(&[route.label, field])
            .inc();
    }
}

/// Applies [`Validate`] to a service.
#[derive(Debug, Clone)]
pub struct ValidateLayer {
    enabled: bool,
    metrics: ValidationMetrics,
}

impl ValidateLayer {
    pub fn new(config: &config::Validation, metrics: ValidationMetrics) -> Self {
        ValidateLayer {
            enabled: config.enabled,
            metrics,
        }
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate {
            inner,
            enabled: self.enabled,
            metrics: self.metrics.clone(),
        }
    }
}

/// Refuses invalid token requests with [`GatewayError::Invalid`] and sets [`ClientId`].
#[derive(Debug, Clone)]
pub struct Validate<S> {
    inner: S,
    enabled: bool,
    metrics: ValidationMetrics,
}

impl<S> Service<Request<Bytes>> for Validate<S>
where
    S: Service<
            Request<Bytes>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = ResponseFuture,
        > + Clone
        + Send
        + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> ResponseFuture {
        let route = req.route();
        if let Some(route) = route.filter(Route::creates_token) {
            match inspect(route.kind, req.body(), self.enabled) {
                Ok(Some(id)) => {
                    req.extensions_mut().insert(id);
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.rejected(&route, e.field);
                    return Box::pin(std::future::ready(Err(e.into())));
                }
            }
        }
        // Readiness was the inner service's (`poll_ready`): call it in place, no clone.
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tower::ServiceExt;

    use crate::idenfy::{BAD_VALUE, JSON_ERROR, MISSING_VALUE};

    const KYC: Route = Route {
        kind: RouteKind::KycToken,
        label: "/api/v2/token",
    };
    const KYB: Route = Route {
        kind: RouteKind::KybToken,
        label: "/kyb/tokens/",
    };
    const STATUS: Route = Route {
        kind: RouteKind::Other,
        label: "/api/v2/status",
    };

    /// What the inner service saw: one `Option<ClientId>` per request that reached it.
    type Seen = Arc<Mutex<Vec<Option<ClientId>>>>;

    type Inner = tower::util::BoxCloneService<Request<Bytes>, Response<Body>, GatewayError>;

    fn stack(enabled: bool) -> (Validate<Inner>, Seen, Registry) {
        let seen = Seen::default();
        let record = seen.clone();
        let inner = tower::service_fn(move |req: Request<Bytes>| {
            record
                .lock()
                .unwrap()
                .push(req.extensions().get::<ClientId>().cloned());
            async { Ok::<_, GatewayError>(Response::new(Body::empty())) }
        });
        let registry = Registry::new();
        let metrics = ValidationMetrics::new(&registry).unwrap();
        let layer = ValidateLayer::new(&config::Validation { enabled }, metrics);
        (layer.layer(Inner::new(inner)), seen, registry)
    }

    fn request(route: Route, body: &'static str) -> Request<Bytes> {
        let mut req = Request::post("/")
            .body(Bytes::from_static(body.as_bytes()))
            .unwrap();
        req.context_mut().route = Some(route);
        req
    }

    fn invalid(err: GatewayError) -> (&'static str, &'static str) {
        match err {
            GatewayError::Invalid {
                identifier, field, ..
            } => (identifier, field),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn rejections(registry: &Registry, route: &str, field: &str) -> u64 {
        let families = registry.gather();
        let Some(family) = families
            .iter()
            .find(|f| f.name() == "idenfy_gateway_validation_rejections_total")
        else {
            return 0;
        };
        family
            .get_metric()
            .iter()
            .filter(|m| {
                let labels: Vec<_> = m.get_label().iter().map(|l| l.value()).collect();
                labels.contains(&route) && labels.contains(&field)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[tokio::test]
    async fn valid_token_request_reaches_inner_with_client_id() {
        let (svc, seen, _) = stack(true);
        svc.oneshot(request(KYC, r#"{"clientId":100000,"firstName":"Ona"}"#))
            .await
            .unwrap();
        let id = seen.lock().unwrap()[0].clone().expect("ClientId set");
        assert_eq!(&*id.0, "100000");
    }

    #[tokio::test]
    async fn invalid_token_request_never_reaches_inner() {
        let (svc, seen, registry) = stack(true);
        let err = svc
            .oneshot(request(KYC, r#"{"clientId":"c","sex":"X"}"#))
            .await
            .unwrap_err();
        assert_eq!(invalid(err.clone()), (BAD_VALUE, "sex"));
        assert_eq!(
            err.into_response().headers()["x-gateway-error"],
            "validation"
        );
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(rejections(&registry, "/api/v2/token", "sex"), 1);
    }

    #[tokio::test]
    async fn missing_client_id_is_refused() {
        let (svc, seen, registry) = stack(true);
        let err = svc
            .oneshot(request(KYB, r#"{"tokenType":"FORM"}"#))
            .await
            .unwrap_err();
        assert_eq!(invalid(err), (MISSING_VALUE, "clientId"));
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(rejections(&registry, "/kyb/tokens/", "clientId"), 1);
    }

    #[tokio::test]
    async fn malformed_body_is_a_json_error() {
        for body in ["{", "[]", ""] {
            let (svc, seen, registry) = stack(true);
            let err = svc.oneshot(request(KYC, body)).await.unwrap_err();
            assert_eq!(invalid(err), (JSON_ERROR, "body"));
            assert!(seen.lock().unwrap().is_empty());
            assert_eq!(rejections(&registry, "/api/v2/token", "body"), 1);
        }
    }

    #[tokio::test]
    async fn disabled_validation_passes_everything_but_still_finds_client_id() {
        let (svc, seen, _) = stack(false);
        svc.clone()
            .oneshot(request(KYC, r#"{"clientId":"c1","sex":"X"}"#))
            .await
            .unwrap();
        svc.oneshot(request(KYC, "not json")).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].as_ref().map(|id| &*id.0), Some("c1"));
        assert_eq!(seen[1], None);
    }

    #[tokio::test]
    async fn other_routes_pass_through_unparsed() {
        let (svc, seen, _) = stack(true);
        svc.clone()
            .oneshot(request(STATUS, "not json"))
            .await
            .unwrap();
        // No Route extension at all: not ours to judge.
        svc.oneshot(Request::new(Bytes::from_static(b"{")))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![None, None]);
    }

    #[test]
    fn inspect_uses_the_schema_of_the_route() {
        // `tags` is a KYB field: the KYC schema does not know it, so it passes there.
        let body = br#"{"clientId":"c","tags":"solo"}"#;
        assert!(inspect(RouteKind::KycToken, body, true).is_ok());
        let err = inspect(RouteKind::KybToken, body, true).unwrap_err();
        assert_eq!((err.identifier, err.field), (BAD_VALUE, "tags"));
    }
}
