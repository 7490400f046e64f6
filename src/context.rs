//! What the outer layers learn about a request and hand to the inner ones, as request extensions.

use std::sync::Arc;

use tokio::time::Instant;

/// The team that sent the request (set by `identify`), and the iDenfy account it maps to.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Index into `Config::teams`.
    pub team: usize,
    /// The team's name from config: a bounded metric label.
    pub team_name: Arc<str>,
    /// Index into `Config::accounts`.
    pub account: usize,
    /// The account's name from config.
    pub account_name: Arc<str>,
}

/// What kind of iDenfy call this is (set by `route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `POST /api/v2/token`: opens a billable KYC session; coalesced and replayed.
    KycToken,
    /// `POST /kyb/tokens/`: opens a KYB form session; coalesced and replayed.
    KybToken,
    /// Anything else on the allow-list: proxied.
    Other,
}

/// The matched route: its kind and a template label from a fixed set (never a raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub kind: RouteKind,
    pub label: &'static str,
}

impl Route {
    /// Token-creating routes: validated, coalesced and replayed.
    pub fn creates_token(&self) -> bool {
        matches!(self.kind, RouteKind::KycToken | RouteKind::KybToken)
    }
}

/// When the whole request must be answered: limiter waits, attempts and backoff together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left, zero once passed.
    pub fn remaining(&self) -> std::time::Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// The `clientId` (or legacy `personScanRef`) of a token-creating request, as a string even when
/// the caller sent a number (set by `validate`): the dedup key. Never a metric label or a log field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub Arc<str>);

/// What `front` learns about a request, for the inner layers, as one request extension: front
/// inserts one value instead of three, and a layer's look-up is one. Read and written through
/// [`ContextExt`].
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub caller: Option<Caller>,
    pub route: Option<Route>,
    pub deadline: Option<Deadline>,
}

/// A request's [`RequestContext`], through the request.
pub trait ContextExt {
    fn context(&self) -> Option<&RequestContext>;

    /// The context, made empty first if the request has none.
    fn context_mut(&mut self) -> &mut RequestContext;

    fn caller(&self) -> Option<&Caller> {
        self.context()?.caller.as_ref()
    }

    fn route(&self) -> Option<Route> {
        self.context()?.route
    }

    fn deadline(&self) -> Option<Deadline> {
        self.context()?.deadline
    }
}

impl<B> ContextExt for http::Request<B> {
    fn context(&self) -> Option<&RequestContext> {
        self.extensions().get()
    }

    fn context_mut(&mut self) -> &mut RequestContext {
        self.extensions_mut().get_or_insert_default()
    }
}
