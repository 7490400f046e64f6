//! The upstream client: one attempt against iDenfy. Innermost on the request path.
//!
//! A small HTTP/1.1 client polled in the caller's task: no task per request, no channel to a
//! connection task. Keep-alive connections are pooled ([`pool`]); rustls with the webpki roots
//! plus an optional extra CA for `https`, plain TCP for loopback tests, TCP keepalive on both
//! ([`conn`]); the wire format is in [`codec`] and [`chunked`], one exchange in [`exchange`] and
//! its answer in [`answered`], driven by the [`attempt`] future (one boxed allocation per
//! attempt, a few hundred bytes). `connect_timeout` and `attempt_timeout` are enforced here, and
//! so is the request [`Deadline`] when it comes first (one bound per attempt, on a timer each
//! connection keeps: the retry loop sets none of its own); small bodies are read whole, others
//! streamed back ([`body`]), cut when no byte comes for `attempt_timeout` or at the deadline.
//!
//! Every request asks for `accept-encoding: identity`, whatever the caller asked: the gateway
//! reads answers on every route. A request that failed unanswered on a reused connection is sent
//! again at once only when none of it was written or it is idempotent; otherwise the retry loop
//! decides, as for any connection that broke after send.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, StatusCode};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use tokio::time::Instant;
use tower::Service;

use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::Deadline;
use crate::error::GatewayError;
use crate::metrics::{status_class, status_class_index, HandleTable, STATUS_CLASSES};

mod answered;
mod attempt;
mod body;
mod conn;
mod exchange;
mod pool;

use attempt::Attempt;
pub(crate) use body::UpstreamBody;
use exchange::{Bound, Client};

/// What one attempt sends: the caller's request, shared by every attempt of the retry loop and
/// never edited, and the account's `Authorization`, written in place of any the caller sent.
pub struct Authorized {
    pub request: Arc<Request<Bytes>>,
    pub authorization: Arc<HeaderValue>,
}

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

    /// Counts one attempt of account `index` (named `name`): its status, or the error.
    fn record(
        &self,
        index: usize,
        name: &str,
        result: Result<StatusCode, &GatewayError>,
        seconds: f64,
    ) {
        let outcome = match result {
            Ok(status) => status_class(status),
            Err(e) => e.reason(),
        };
        let counter = || self.attempts.with_label_values(&[name, outcome]);
        let class = result.ok().map(status_class_index);
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

/// Sends one attempt to iDenfy. Clones share one pool.
#[derive(Clone)]
pub struct Upstream {
    /// Shared, not cloned: every layer clones its inner service per request.
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    attempt_timeout: Duration,
    metrics: UpstreamMetrics,
}

impl Upstream {
    pub fn new(cfg: &config::Upstream, metrics: UpstreamMetrics) -> anyhow::Result<Self> {
        let tls = tls_config(cfg.ca_file.as_deref())?;
        let connector = conn::Connector::new(&cfg.url, tls, cfg.connect_timeout)?;
        let pool = pool::Pool::new(cfg.pool_idle_timeout, cfg.pool_max_idle);
        pool.spawn_reaper();
        Ok(Upstream {
            shared: Arc::new(Shared {
                client: Client::new(pool, connector, host_header(&cfg.url)?),
                attempt_timeout: cfg.attempt_timeout,
                metrics,
            }),
        })
    }
}

/// The `host` header for `url`: its authority, without the scheme's default port.
fn host_header(url: &http::Uri) -> anyhow::Result<Bytes> {
    let authority = url
        .authority()
        .ok_or_else(|| anyhow::anyhow!("upstream.url has no host"))?;
    let default_port = match url.scheme() {
        Some(s) if *s == Scheme::HTTPS => 443,
        _ => 80,
    };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str(),
        _ => authority.host(),
    };
    Ok(Bytes::copy_from_slice(host.as_bytes()))
}

pub(crate) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ClientConfig> {
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

impl Service<Authorized> for Upstream {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Authorized) -> Self::Future {
        Box::pin(Attempt::new(self.shared.clone(), req))
    }
}

impl Shared {
    /// When an attempt started at `started` must end, and its error if it does not: after
    /// `attempt_timeout` (`UpstreamTimedOut`, may be retried), or at the request deadline when that
    /// comes first (`DeadlineExceeded`: 504 `x-gateway-error: deadline`, never retried).
    fn bound(&self, started: Instant, deadline: Option<Deadline>) -> Bound {
        let timeout = started + self.attempt_timeout;
        match deadline {
            Some(d) if d.0 < timeout => Bound {
                at: d.0,
                deadline: true,
            },
            _ => Bound {
                at: timeout,
                deadline: false,
            },
        }
    }
}
