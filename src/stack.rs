//! The request path, in one place. Layers are listed outermost first: a layer added earlier
//! sees the request earlier. Each line says why the layer is there and what must come before it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prometheus::Registry;
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::config::Config;
use crate::credentials::{Credentials, SetCredentialsLayer};
use crate::dedup::{DedupLayer, DedupMetrics, SessionEnds, SessionObserver};
use crate::error::GatewayError;
use crate::front::{Admit, FrontLayer};
use crate::identify::Callers;
use crate::metrics::RequestMetrics;
use crate::ratelimit::carry::{account_key, team_key};
use crate::ratelimit::{AccountLimitLayer, Gates, LimitMetrics, Quotas, TeamLimitLayer};
use crate::retry::{RetryLayer, RetryMetrics};
use crate::route::Routes;
use crate::state::{SharedState, StateMetrics};
use crate::upstream::{Upstream, UpstreamMetrics};
use crate::validate::{ValidateLayer, ValidationMetrics};

/// A service answering requests with body `B` as the listener needs: a response with the
/// stack's body, never an error, a future it can hold across awaits.
pub trait Serves<B>:
    Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
{
}

impl<T, B> Serves<B> for T where
    T: Service<Request<B>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
{
}

/// The service a layer wraps: it answers a request `R` (by default the body read whole) with the
/// stack's body or a [`GatewayError`], is cloned into the futures it spawns, and its futures
/// outlive the call that made them.
pub trait Inner<R = Request<Bytes>>:
    Service<R, Response = Response<Body>, Error = GatewayError, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, R> Inner<R> for T where
    T: Service<R, Response = Response<Body>, Error = GatewayError, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The proxy's service as the listener sees it: requests hyper reads (`Incoming`: h2c, and the
/// HTTP/1 cases the server's own loop hands over), and the requests of that loop, admitted from
/// their head before it reads their body ([`Admit`]).
pub trait App: Serves<Incoming> + Admit + Clone + Send + Sync + 'static {}

impl<T> App for T where T: Serves<Incoming> + Admit + Clone + Send + Sync + 'static {}

/// Builds the proxy's service: one per gateway, cloned per connection. `callers` and
/// `credentials` are built from `config` by the caller, which keeps them fresh (token and
/// secret files re-read on change).
pub fn app(
    config: &Config,
    registry: &Registry,
    credentials: Credentials,
    callers: Callers,
) -> anyhow::Result<impl App> {
    let parts = Parts::new(registry)?.with_state(&config.state, registry)?;
    build(config, &parts, credentials, callers, None).map(|(app, _)| app)
}

/// What outlives a config reload: the metrics (registered once) and the quotas of unchanged
/// teams and accounts.
#[derive(Clone)]
pub struct Parts {
    request: RequestMetrics,
    validation: ValidationMetrics,
    dedup: DedupMetrics,
    limit: LimitMetrics,
    retry: RetryMetrics,
    upstream: UpstreamMetrics,
    quotas: Quotas,
    /// Told of every session a token answer opened (the webhook queue's scanRef→team routes).
    observer: Option<Arc<dyn SessionObserver>>,
    /// Ends replay for a scanRef from outside the stack (a final webhook), in whichever dedup
    /// state the current build uses.
    ends: SessionEnds,
    /// The fleet's shared state (`state.backend = "redis"`); `None`: every quota is local.
    /// Chosen at start (a change of `[state]` needs a restart).
    state: Option<SharedState>,
    /// Where request and attempt spans go (`telemetry.otlp_endpoint`): started once, at start,
    /// and kept by every build (a new endpoint needs a restart).
    #[cfg(feature = "otlp")]
    spans: Option<crate::telemetry::otlp::Spans>,
}

impl Parts {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let dedup = DedupMetrics::new(registry)?;
        Ok(Parts {
            request: RequestMetrics::new(registry)?,
            validation: ValidationMetrics::new(registry)?,
            ends: SessionEnds::unset(),
            dedup,
            limit: LimitMetrics::new(registry)?,
            retry: RetryMetrics::new(registry)?,
            upstream: UpstreamMetrics::new(registry)?,
            quotas: Quotas::default(),
            observer: None,
            state: None,
            #[cfg(feature = "otlp")]
            spans: None,
        })
    }

    /// The shared state of `state`: with `redis`, its client (connecting lazily) and its
    /// metrics, registered in `registry`. Needs a tokio runtime.
    pub fn with_state(
        mut self,
        state: &crate::config::State,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        if let crate::config::State::Redis(redis) = state {
            let metrics = StateMetrics::new(registry)?;
            self.state = Some(SharedState::connect(redis, metrics)?);
        }
        Ok(self)
    }

    /// The fleet's shared state, with `state.backend = "redis"`.
    pub fn shared_state(&self) -> Option<&SharedState> {
        self.state.as_ref()
    }

    /// Dedup tells `observer` of every session created, in every build.
    pub fn observed_by(mut self, observer: Option<Arc<dyn SessionObserver>>) -> Self {
        self.observer = observer;
        self
    }

    /// Every build's requests and attempts are exported as spans to `spans`.
    #[cfg(feature = "otlp")]
    pub fn exporting(mut self, spans: Option<crate::telemetry::otlp::Spans>) -> Self {
        self.spans = spans;
        self
    }

    /// The handle that ends replay for a scanRef, in the current build's dedup state.
    pub fn session_ends(&self) -> SessionEnds {
        self.ends.clone()
    }
}

/// The stateful layers of one build, which the next build keeps while what they were built from
/// is unchanged: the dedup state (flights in progress, live tokens to replay) and the upstream
/// connection pool.
#[derive(Clone)]
pub struct Kept {
    dedup: (String, DedupLayer),
    upstream: (String, Upstream),
}

/// [`app`] from kept parts: quotas of unchanged teams and accounts keep their state, and the
/// dedup state and the upstream pool are `previous`'s when their settings, teams and accounts
/// are the same (dedup keys and owners are team and account positions).
pub fn build(
    config: &Config,
    parts: &Parts,
    credentials: Credentials,
    callers: Callers,
    previous: Option<&Kept>,
) -> anyhow::Result<(impl App, Kept)> {
    let names = |names: Vec<&str>| names.join("\n");
    let dedup_key = format!(
        "{:?} {} {:?} teams {} accounts {}",
        config.dedup,
        config.limits.max_body,
        config.upstream.deadline,
        names(config.teams.iter().map(|t| t.name.as_str()).collect()),
        names(config.accounts.iter().map(|a| a.name.as_str()).collect()),
    );
    let dedup = match previous {
        Some(Kept { dedup, .. }) if dedup.0 == dedup_key => dedup.1.clone(),
        _ => {
            let layer = DedupLayer::new(
                &config.dedup,
                config.limits.max_body,
                config.upstream.deadline,
                parts.dedup.clone().for_teams(config.teams.len()),
            );
            let layer = match &parts.observer {
                Some(observer) => layer.observed_by(Arc::clone(observer)),
                None => layer,
            };
            // Fleet mode: each key's flight and replay entry shared through Redis.
            match &parts.state {
                Some(state) => layer.shared_through(
                    state,
                    config.accounts.iter().map(|a| a.name.clone()).collect(),
                    config.teams.iter().map(|t| t.name.clone()).collect(),
                ),
                None => layer,
            }
        }
    };
    dedup.point(&parts.ends);
    let upstream_key = format!("{:?} {}", config.upstream, config.accounts.len());
    let upstream = match previous {
        Some(Kept { upstream, .. }) if upstream.0 == upstream_key => upstream.1.clone(),
        _ => {
            let metrics = parts.upstream.clone().for_accounts(config.accounts.len());
            Upstream::new(&config.upstream, metrics)?
        }
    };
    let kept = Kept {
        dedup: (dedup_key, dedup.clone()),
        upstream: (upstream_key, upstream.clone()),
    };
    let quota_keys = (config.teams.iter().map(|t| team_key(&t.name)))
        .chain(config.accounts.iter().map(|a| account_key(&a.name)))
        .collect();
    // The quotas' backend, chosen here once: this replica's memory, or the fleet's Redis.
    let gates = Gates {
        quotas: &parts.quotas,
        state: parts.state.as_ref(),
    };
    let team_limit = TeamLimitLayer::keeping(
        &config.teams,
        &config.accounts,
        &config.limits,
        &parts.limit,
        gates,
    );
    // Fleet mode: a token leader's quota is decided by the script that gives it the fleet's
    // lease, for this build's team limit (one round trip less).
    let dedup = dedup.deciding_ahead(team_limit.ahead());
    let account_limit = AccountLimitLayer::keeping(
        &config.accounts,
        &config.limits,
        &config.retry,
        &parts.limit,
        gates,
    );
    parts.quotas.keep_only(&quota_keys);
    let app = ServiceBuilder::new()
        // Identify (401), route (404/400) and the body limit (413) first: a request the gateway
        // will refuse costs nothing and never reaches iDenfy. Also the request id, the deadline,
        // the log line, the request metrics, and the one place errors become responses.
        .layer(FrontLayer::new(
            callers,
            Routes::new(&config.routes.prefixes),
            config.limits.max_body,
            config.listen.body_read_timeout,
            config.upstream.deadline,
            parts.request.clone(),
            #[cfg(feature = "otlp")]
            parts.spans.clone(),
        ))
        // Answer locally what iDenfy would refuse with 400 (no quota spent), and find the
        // clientId that dedup keys on. Token routes only; needs the route (front).
        .layer(ValidateLayer::new(
            &config.validation,
            parts.validation.clone(),
        ))
        // Coalesce concurrent token requests per (account, route, clientId) and replay live
        // tokens: followers and replays never reach the limits, so they spend no quota.
        // Needs the caller and route (front) and the clientId (validate).
        .layer(dedup)
        // The team's quota on logical requests: wait briefly in line, or 429. After dedup, so
        // coalesced and replayed requests spend nothing.
        .layer(team_limit)
        // Retries 429/5xx/connection failures with full-jitter backoff, within the budget and
        // the deadline; everything inside runs once per attempt, on the same shared request.
        .layer(RetryLayer::new(&config.retry, parts.retry.clone()))
        // The account's quota on upstream attempts (retries included), and the account-wide
        // pause after iDenfy says 429. Inside the retry loop: every attempt counts at iDenfy.
        .layer(account_limit)
        // Per attempt: the account's credentials in place of the caller's (the request itself is
        // shared by the attempts and not edited; front removed the hop-by-hop headers).
        .layer(SetCredentialsLayer::new(credentials))
        // One attempt against iDenfy, with the attempt timeout.
        .service(upstream);
    Ok((app, kept))
}
