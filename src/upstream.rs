//! The upstream client: one attempt against iDenfy. Innermost on the request path.
//!
//! Pooled keep-alive connections (HTTP/1.1, or HTTP/2 when TLS negotiates it), rustls with the
//! webpki roots plus an optional extra CA, plain http for loopback tests. `connect_timeout` and
//! `attempt_timeout` are enforced here; the response body is streamed back untouched.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use tokio::time::Instant;
use tower::Service;

use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::Caller;
use crate::credentials::strip_hop_by_hop;
use crate::error::GatewayError;
use crate::metrics::{status_class, status_class_index, HandleTable, STATUS_CLASSES};

/// Buckets of the upstream attempt duration, in seconds: iDenfy answers in tens to hundreds of
/// milliseconds; the tail up to `attempt_timeout` (15 s by default) matters for alerts.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];

/// Metrics of upstream attempts.
#[derive(Clone)]
pub struct UpstreamMetrics {
    attempts: IntCounterVec,
    duration: HistogramVec,
    handles: Arc<Handles>,
}

/// Handles by account index: attempts by status class (errors are looked up by label), and the
/// duration histogram.
struct Handles {
    attempts: HandleTable<IntCounter>,
    duration: HandleTable<Histogram>,
}

impl Handles {
    fn new(accounts: usize) -> Self {
        Handles {
            attempts: HandleTable::new(accounts, STATUS_CLASSES.len()),
            duration: HandleTable::new(accounts, 1),
        }
    }
}

impl UpstreamMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_upstream_attempts_total",
                "Attempts sent to iDenfy, by account and outcome",
            ),
            &["account", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "idenfy_gateway_upstream_duration_seconds",
                "Time to iDenfy's response head",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["account"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(UpstreamMetrics {
            attempts,
            duration,
            handles: Arc::new(Handles::new(0)),
        })
    }

    /// Resolves each account's metric handles once, on its first attempt, instead of a label
    /// look-up per attempt (`accounts`: how many there are in the config).
    pub fn for_accounts(mut self, accounts: usize) -> Self {
        self.handles = Arc::new(Handles::new(accounts));
        self
    }

    /// Counts one attempt of account `index` (named `name`).
    fn record(
        &self,
        index: usize,
        name: &str,
        result: &Result<Response<hyper::body::Incoming>, GatewayError>,
        seconds: f64,
    ) {
        let outcome = outcome_label(result);
        let counter = || self.attempts.with_label_values(&[name, outcome]);
        let class = match result {
            Ok(res) => Some(status_class_index(res.status())),
            Err(_) => None,
        };
        match class.and_then(|c| self.handles.attempts.get(index, c, counter)) {
            Some(c) => c.inc(),
            None => counter().inc(),
        }
        let histogram = || self.duration.with_label_values(&[name]);
        match self.handles.duration.get(index, 0, histogram) {
            Some(h) => h.observe(seconds),
            None => histogram().observe(seconds),
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends one attempt to iDenfy.
#[derive(Clone)]
pub struct Upstream {
    /// Shared, not cloned: every layer clones its inner service per request, and a hyper
    /// `Client` clone is a dozen reference counts.
    client: Arc<HttpClient>,
    scheme: Scheme,
    authority: Authority,
    attempt_timeout: Duration,
    metrics: Arc<UpstreamMetrics>,
}

impl Upstream {
    pub fn new(cfg: &config::Upstream, metrics: UpstreamMetrics) -> anyhow::Result<Self> {
        let tls = tls_config(cfg.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        let scheme = cfg.url.scheme().cloned().unwrap_or(Scheme::HTTPS);
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("upstream.url has no host"))?;
        Ok(Upstream {
            client: Arc::new(client),
            scheme,
            authority,
            attempt_timeout: cfg.attempt_timeout,
            metrics: Arc::new(metrics),
        })
    }

    fn target(&self, uri: &Uri) -> Result<Uri, GatewayError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri.path_and_query().cloned();
        Uri::from_parts(parts).map_err(|_| GatewayError::BadPath)
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)? {
            roots.add(cert?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn outcome_label(result: &Result<Response<hyper::body::Incoming>, GatewayError>) -> &'static str {
    match result {
        Ok(res) => status_class(res.status()),
        Err(e) => e.reason(),
    }
}

impl Service<Request<Bytes>> for Upstream {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let account = req
            .extensions()
            .get::<Caller>()
            .map(|c| (c.account, c.account_name.clone()));
        let (mut parts, body) = req.into_parts();
        let uri = match self.target(&parts.uri) {
            Ok(uri) => uri,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        parts.uri = uri;
        // The client picks the protocol per connection (ALPN); the caller's version is not ours.
        parts.version = http::Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let request = self
            .client
            .request(Request::from_parts(parts, Full::new(body)));
        let timeout = self.attempt_timeout;
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, request).await {
                Err(_) => Err(GatewayError::UpstreamTimedOut),
                Ok(Err(e)) if e.is_connect() => Err(GatewayError::UpstreamConnect),
                Ok(Err(_)) => Err(GatewayError::UpstreamProtocol),
                Ok(Ok(res)) => Ok(res),
            };
            let seconds = started.elapsed().as_secs_f64();
            match &account {
                Some((index, name)) => metrics.record(*index, name, &result, seconds),
                // No caller: no handle row; looked up by label.
                None => metrics.record(usize::MAX, "", &result, seconds),
            }
            let res = result?;
            let (mut parts, incoming) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Body::stream(incoming)))
        })
    }
}
