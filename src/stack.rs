//! The request path, in one place. Layers are listed outermost first: a layer added earlier
//! sees the request earlier. Each line says why the layer is there and what must come before it.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prometheus::Registry;
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::config::Config;
use crate::credentials::{Credentials, SetCredentialsLayer};
use crate::dedup::{DedupLayer, DedupMetrics};
use crate::error::GatewayError;
use crate::front::{Admit, FrontLayer};
use crate::identify::Callers;
use crate::metrics::RequestMetrics;
use crate::ratelimit::{AccountLimitLayer, LimitMetrics, TeamLimitLayer};
use crate::retry::{RetryLayer, RetryMetrics};
use crate::route::Routes;
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
    let limit_metrics = LimitMetrics::new(registry)?;
    let upstream_metrics = UpstreamMetrics::new(registry)?.for_accounts(config.accounts.len());
    let upstream = Upstream::new(&config.upstream, upstream_metrics)?;
    Ok(ServiceBuilder::new()
        // Identify (401), route (404/400) and the body limit (413) first: a request the gateway
        // will refuse costs nothing and never reaches iDenfy. Also the request id, the deadline,
        // the log line, the request metrics, and the one place errors become responses.
        .layer(FrontLayer::new(
            callers,
            Routes::new(&config.routes.prefixes),
            config.limits.max_body,
            config.listen.body_read_timeout,
            config.upstream.deadline,
            RequestMetrics::new(registry)?,
        ))
        // Answer locally what iDenfy would refuse with 400 (no quota spent), and find the
        // clientId that dedup keys on. Token routes only; needs the route (front).
        .layer(ValidateLayer::new(
            &config.validation,
            ValidationMetrics::new(registry)?,
        ))
        // Coalesce concurrent token requests per (account, route, clientId) and replay live
        // tokens: followers and replays never reach the limits, so they spend no quota.
        // Needs the caller and route (front) and the clientId (validate).
        .layer(DedupLayer::new(
            &config.dedup,
            config.limits.max_body,
            config.upstream.deadline,
            DedupMetrics::new(registry)?.for_teams(config.teams.len()),
        ))
        // The team's quota on logical requests: wait briefly in line, or 429. After dedup, so
        // coalesced and replayed requests spend nothing.
        .layer(TeamLimitLayer::new(
            &config.teams,
            &config.limits,
            &limit_metrics,
        ))
        // Retries 429/5xx/connection failures with full-jitter backoff, within the budget and
        // the deadline; everything inside runs once per attempt, on the same shared request.
        .layer(RetryLayer::new(&config.retry, RetryMetrics::new(registry)?))
        // The account's quota on upstream attempts (retries included), and the account-wide
        // pause after iDenfy says 429. Inside the retry loop: every attempt counts at iDenfy.
        .layer(AccountLimitLayer::new(
            &config.accounts,
            &config.limits,
            &config.retry,
            &limit_metrics,
        ))
        // Per attempt: the account's credentials in place of the caller's (the request itself is
        // shared by the attempts and not edited; front removed the hop-by-hop headers).
        .layer(SetCredentialsLayer::new(credentials))
        // One attempt against iDenfy, with the attempt timeout.
        .service(upstream))
}
