//! The account limit: one quota per iDenfy account on upstream attempts, inside the retry loop
//! (every retry spends it), and the account pause: iDenfy's 429, or 400 `TOO_MANY_REQUESTS`,
//! holds every attempt on that account, from every team, until the pause ends.
//!
//! The pause lasts the answer's `Retry-After` (delta-seconds or HTTP-date, at most 1 h) when it
//! has one. iDenfy documents none, so without it the pause is `min(retry.cap, retry.base * 2^k)`,
//! `k` being the number of throttled answers in a row before this one: 200 ms, 400 ms, 800 ms …
//! up to 5 s with the defaults. Any other answer resets `k`.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::metrics::{LimitMetrics, PauseMetrics, QuotaMetrics};
use super::{denied, Gate, Gates, Quotas};
use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::ContextExt;
use crate::deadline::wait_budget;
use crate::error::{GatewayError, Limit};
use crate::retry::backoff::{self, Backoff};
use crate::retry::inspect;
use crate::retry::policy::is_throttled;
use crate::stack::Inner;

/// Adds the per-account quota and pause to a service.
#[derive(Clone)]
pub struct AccountLimitLayer {
    shared: Arc<Shared>,
}

/// The per-account quota around credentials and the upstream client.
#[derive(Clone)]
pub struct AccountLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    /// Indexed like `Config::accounts`.
    accounts: Vec<Account>,
    max_wait: Duration,
    /// Pause length when iDenfy gives no `Retry-After`.
    pause: Backoff,
}

struct Account {
    /// The quota: local, or the fleet's (whose pause is shared too).
    gate: Gate,
    metrics: QuotaMetrics,
    pause: PauseMetrics,
    /// Throttled answers in a row.
    throttled: AtomicU32,
}

impl AccountLimitLayer {
    pub fn new(
        accounts: &[config::Account],
        limits: &config::Limits,
        retry: &config::Retry,
        metrics: &LimitMetrics,
    ) -> Self {
        let gates = Gates {
            quotas: &Quotas::default(),
            state: None,
        };
        Self::keeping(accounts, limits, retry, metrics, gates)
    }

    /// [`new`](Self::new) with the gates of `gates`: local quotas kept for accounts whose rate
    /// and burst are unchanged (a config reload), or the fleet's in Redis.
    pub fn keeping(
        accounts: &[config::Account],
        limits: &config::Limits,
        retry: &config::Retry,
        metrics: &LimitMetrics,
        gates: Gates<'_>,
    ) -> Self {
        let accounts = accounts
            .iter()
            .map(|a| Account {
                gate: gates.account(a),
                metrics: metrics.quota(Limit::Account, &a.name),
                pause: metrics.pause(&a.name),
                throttled: AtomicU32::new(0),
            })
            .collect();
        AccountLimitLayer {
            shared: Arc::new(Shared {
                accounts,
                max_wait: limits.max_wait,
                pause: Backoff {
                    base: retry.base,
                    cap: retry.cap,
                },
            }),
        }
    }
}

impl<S> Layer<S> for AccountLimitLayer {
    type Service = AccountLimit<S>;

    fn layer(&self, inner: S) -> AccountLimit<S> {
        AccountLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// `R`: the request, owned or shared (the retry loop hands every attempt the same
/// `Arc<Request<Bytes>>`); the limit only reads it.
impl<S, R> Service<R> for AccountLimit<S>
where
    S: Inner<R>,
    R: Borrow<Request<Bytes>> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = AccountFuture<S::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        // `identify` always sets the caller; without one the stack is miswired.
        let index = req.borrow().caller().map(|c| c.account);
        let Some((index, account)) = index.and_then(|a| Some((a, self.shared.accounts.get(a)?)))
        else {
            return AccountFuture::boxed(Box::pin(std::future::ready(Err(GatewayError::Internal))));
        };
        // The common case, decided here: a free cell, nobody in line, no pause. The inner
        // service is called in place (it is always ready): no wait future, no clone of it, and
        // no box either: the answer is settled by `AccountFuture` itself.
        if account.gate.take_free() {
            account.metrics.admitted(Duration::ZERO);
            return AccountFuture::Settling {
                answer: self.inner.call(req),
                shared: Some(self.shared.clone()),
                index,
            };
        }
        let (mut inner, shared) = (self.inner.clone(), self.shared.clone());
        AccountFuture::boxed(Box::pin(async move {
            let account = &shared.accounts[index];
            let request = req.borrow();
            let budget = wait_budget(shared.max_wait, request.deadline().as_ref());
            let admitted = account.gate.acquire_attempt(request.extensions(), budget);
            let waited = admitted
                .await
                .map_err(|d| denied(d, &account.metrics, Limit::Account))?;
            account.metrics.admitted(waited);
            let res = inner.call(req).await?;
            Shared::settle(shared, index, res).await
        }))
    }
}

pin_project! {
    /// The account limit's answer: the inner service's future, settled in place when the quota
    /// let the attempt go at once (the usual attempt: no box of its own), or a boxed future (a
    /// wait in line, a 400 whose body is read, a miswired stack).
    #[project = AccountFutureProj]
    pub enum AccountFuture<F> {
        /// The inner answer, then settled (`shared` is taken once it is).
        Settling {
            #[pin]
            answer: F,
            shared: Option<Arc<Shared>>,
            index: usize,
        },
        /// Anything else.
        Boxed { future: ResponseFuture },
    }
}

impl<F> AccountFuture<F> {
    fn boxed(future: ResponseFuture) -> Self {
        AccountFuture::Boxed { future }
    }
}

impl<F> Future for AccountFuture<F>
where
    F: Future<Output = Result<Response<Body>, GatewayError>>,
{
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (res, shared, index) = match self.as_mut().project() {
            AccountFutureProj::Boxed { future } => return future.as_mut().poll(cx),
            AccountFutureProj::Settling {
                answer,
                shared,
                index,
            } => {
                let res = ready!(answer.poll(cx))?;
                // Polled again after `Ready` (a misuse): the miswired-stack answer.
                let shared = shared.take().ok_or(GatewayError::Internal)?;
                (res, shared, *index)
            }
        };
        if !inspect::needs_identifier(res.status()) {
            return Poll::Ready(Ok(shared.settle_now(index, res, None)));
        }
        // A 400: its body is read for its `identifier` (a rare path, boxed).
        self.set(AccountFuture::boxed(Box::pin(Shared::settle(
            shared, index, res,
        ))));
        self.poll(cx)
    }
}

impl Shared {
    /// The attempt's answer `res` settled: only a 400 has its body read (boxed, a rare path),
    /// for its `identifier`.
    async fn settle(
        self: Arc<Self>,
        index: usize,
        res: Response<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let (res, identifier) = if inspect::needs_identifier(res.status()) {
            inspect::with_identifier(res).await?
        } else {
            (res, None)
        };
        let pause = self.throttled(index, &res, identifier.as_deref());
        // A shared pause is written before the answer goes on (to the retry loop, whose next
        // attempt on any replica then meets it): one round trip, on a throttled answer only.
        let shared = self.accounts[index].gate.shared();
        if let (Some(pause), Some(shared)) = (pause, shared) {
            if shared.pause(pause).await.is_err() {
                shared.state().metrics().fell_back(crate::state::Op::Pause);
            }
        }
        Ok(res)
    }

    /// [`settle`](Self::settle) without a body to read (a local quota's answer).
    fn settle_now(
        &self,
        index: usize,
        res: Response<Body>,
        identifier: Option<&str>,
    ) -> Response<Body> {
        self.throttled(index, &res, identifier);
        res
    }

    /// A throttled answer pauses the account (account `index`, known to exist) on this replica
    /// and says for how long; any other ends its streak of throttled answers.
    fn throttled(
        &self,
        index: usize,
        res: &Response<Body>,
        identifier: Option<&str>,
    ) -> Option<Duration> {
        let account = &self.accounts[index];
        if is_throttled(res.status(), identifier) {
            let streak = account.throttled.fetch_add(1, Ordering::Relaxed);
            let pause =
                backoff::retry_after(res.headers()).unwrap_or_else(|| self.pause.ceiling(streak));
            account.pause_for(pause);
            Some(pause)
        } else {
            account.throttled.store(0, Ordering::Relaxed);
            None
        }
    }
}

impl Account {
    /// Holds every attempt on the account for `pause`; the gauge drops when the pause ends.
    fn pause_for(&self, pause: Duration) {
        self.pause.pauses.inc();
        if pause.is_zero() {
            return;
        }
        let until = Instant::now() + pause;
        let quota = self.gate.local();
        quota.pause_until(until);
        self.pause.paused.set(1);
        let (quota, gauge) = (quota.clone(), self.pause.paused.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            // A later, longer pause resets the gauge when it ends.
            if quota.paused_until().is_none() {
                gauge.set(0);
            }
        });
    }
}
