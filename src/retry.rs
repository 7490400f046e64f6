//! The retry loop: inside the team limit, around the account limit, credentials and the upstream
//! client, so that every attempt (retries included) spends account quota. It retries what
//! [`policy`] allows, after a full-jitter [`backoff`] that honours `Retry-After`, within the retry
//! [`budget`], `retry.max_attempts` and the request [`Deadline`].
//!
//! The answer is the last upstream answer, unchanged, plus `x-gateway-attempts: N` (upstream
//! attempts made). When the last attempt failed (connect, timeout, broken connection, deadline),
//! the error is turned into its response here, through [`GatewayError::into_response`], so that it
//! carries the header too. When a retry could not even start (the account limit refused it, or
//! there is no time left for backoff plus an attempt), the previous upstream answer is returned: a
//! real answer from iDenfy says more than "no time left". Only an attempt cut off by the deadline
//! ends in `DeadlineExceeded` (504, `x-gateway-error: deadline`).
//!
//! A retry is counted (`idenfy_gateway_retries_total`) when its attempt is sent: after the
//! backoff, once the account limit has let it through. One the policy wanted but that did not go
//! is counted in `idenfy_gateway_retries_denied_total` under why (max attempts, budget, deadline,
//! account limit). So the retries counted are the answers' `x-gateway-attempts` minus one, summed.

pub mod backoff;
pub mod budget;
pub mod inspect;
pub mod metrics;
pub mod policy;

pub use self::metrics::RetryMetrics;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use self::backoff::Backoff;
use self::budget::RetryBudget;
use self::metrics::Denied;
use self::policy::{Policy, RetryReason, Verdict};
use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::{ContextExt, Deadline, RouteKind};
use crate::deadline::MIN_ATTEMPT_TIME;
use crate::error::GatewayError;

/// Header with the number of upstream attempts made for the request.
pub const X_GATEWAY_ATTEMPTS: &str = "x-gateway-attempts";

/// The same, as a header name built at compile time (inserting by `&str` parses and allocates).
const ATTEMPTS_HEADER: http::HeaderName = http::HeaderName::from_static(X_GATEWAY_ATTEMPTS);

/// `x-gateway-attempts` values for the usual counts, without an allocation per answer. A
/// `static`: a `const` array would be built, and its ten values dropped, on every use.
static ATTEMPT_COUNTS: [HeaderValue; 10] = [
    HeaderValue::from_static("0"),
    HeaderValue::from_static("1"),
    HeaderValue::from_static("2"),
    HeaderValue::from_static("3"),
    HeaderValue::from_static("4"),
    HeaderValue::from_static("5"),
    HeaderValue::from_static("6"),
    HeaderValue::from_static("7"),
    HeaderValue::from_static("8"),
    HeaderValue::from_static("9"),
];

fn attempts_value(attempts: u32) -> HeaderValue {
    usize::try_from(attempts)
        .ok()
        .and_then(|n| ATTEMPT_COUNTS.get(n).cloned())
        .unwrap_or_else(|| HeaderValue::from(attempts))
}

type Answer = Result<Response<Body>, GatewayError>;

/// Adds the retry loop to a service (see the module doc).
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

/// The retry loop around the account limit and the upstream client.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    policy: Policy,
    backoff: Backoff,
    max_attempts: u32,
    budget: RetryBudget,
    metrics: RetryMetrics,
}

/// One attempt's outcome.
struct Attempt {
    answer: Answer,
    /// It reached iDenfy (or tried to connect): an upstream attempt, counted.
    upstream: bool,
    verdict: Verdict,
}

impl RetryLayer {
    /// One budget is shared by every request through this layer (and its clones).
    pub fn new(cfg: &config::Retry, metrics: RetryMetrics) -> Self {
        RetryLayer {
            shared: Arc::new(Shared {
                policy: Policy {
                    retry_token_after_send: cfg.retry_token_after_send,
                },
                backoff: Backoff {
                    base: cfg.base,
                    cap: cfg.cap,
                },
                max_attempts: cfg.max_attempts.get(),
                budget: RetryBudget::new(cfg.budget_ratio, cfg.min_retries_per_second),
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> Service<Request<Bytes>> for Retry<S>
where
    S: Service<Arc<Request<Bytes>>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        // Shared before the loop's future is made: the future holds a pointer, not the request
        // itself, which would be copied into it and then again into the box and the `Arc`.
        let req = Arc::new(req);
        Box::pin(Shared::run(self.shared.clone(), self.inner.clone(), req))
    }
}

impl Shared {
    /// The loop. What it holds across an await is the boxed future, moved into place once per
    /// request: the rare path (an answer kept across backoff, the backoff itself) is a boxed
    /// future of its own, and no local that spans an await is borrowed or left half-moved
    /// (the future would keep room for it), so that the usual request, one attempt, carries
    /// little. The inner service is called without `ready()`: like every layer of the stack, it
    /// is always ready. Every attempt is handed the same request, shared: the layers inside only
    /// read it (the upstream client encodes it when the attempt is made), so a retry needs no
    /// copy.
    async fn run<S>(self: Arc<Self>, mut inner: S, req: Arc<Request<Bytes>>) -> Answer
    where
        S: Service<Arc<Request<Bytes>>, Response = Response<Body>, Error = GatewayError>,
    {
        // One look-up of the request's context for both (each is a hashed extension look-up).
        let (route, deadline) = req
            .context()
            .map_or((None, None), |c| (c.route, c.deadline));
        let kind = route.map_or(RouteKind::Other, |r| r.kind);
        self.budget.deposit();
        // `retry`: why the coming attempt is a retry, if it is one; counted once it is sent.
        let (mut attempts, mut last, mut retry) = (0, None, None);
        loop {
            if deadline.is_some_and(|d| d.remaining() < MIN_ATTEMPT_TIME) {
                self.not_sent(retry, Some(Denied::Deadline));
                return self.finish(Err(GatewayError::DeadlineExceeded), attempts, last);
            }
            let call = inner.call(Arc::clone(&req));
            let Attempt {
                answer,
                upstream,
                verdict,
            } = self.attempt(call, kind).await;
            if !upstream {
                let cause = matches!(answer, Err(GatewayError::RateLimited { .. }))
                    .then_some(Denied::AccountLimit);
                self.not_sent(retry, cause);
                return self.finish(answer, attempts, last);
            }
            if let Some(reason) = retry {
                self.metrics.retried(reason);
            }
            attempts += 1;
            let Verdict::Retry(reason) = verdict else {
                return self.finish(answer, attempts, None);
            };
            match Box::pin(self.back_off(answer, attempts, reason, deadline)).await {
                Ok(kept) => (last, retry) = (Some(kept), Some(reason)),
                Err(answer) => return self.finish(answer, attempts, None),
            }
        }
    }

    /// A retry that passed its checks and its backoff was not sent after all (`retry` is `None`
    /// when the attempt was the first): counted under `cause`, and its budget given back, as
    /// it put no load on iDenfy.
    fn not_sent(&self, retry: Option<RetryReason>, cause: Option<Denied>) {
        if retry.is_none() {
            return;
        }
        self.budget.refund();
        if let Some(cause) = cause {
            self.metrics.denied(cause);
        }
    }

    /// After a retryable answer, `made` attempts so far: the answer kept (a small body read,
    /// freeing the upstream connection) once the backoff has passed, or `Err` with the answer
    /// to finish with when no retry may follow.
    async fn back_off(
        &self,
        answer: Answer,
        made: u32,
        reason: RetryReason,
        deadline: Option<Deadline>,
    ) -> Result<Box<Answer>, Answer> {
        let answer = keep(answer).await;
        let retry_after = answer
            .as_ref()
            .ok()
            .and_then(|r| backoff::retry_after(r.headers()));
        // The retry's index: 0 after the first attempt.
        let delay = self
            .backoff
            .delay(made - 1, retry_after, &mut fastrand::Rng::new());
        if let Some(cause) = self.deny(made, delay, deadline) {
            self.metrics.denied(cause);
            return Err(answer);
        }
        // Not counted as a retry yet: the account limit may still refuse it after the sleep.
        tracing::debug!(
            reason = reason.as_str(),
            attempt = made,
            ?delay,
            "backing off before a retry"
        );
        tokio::time::sleep(delay).await;
        Ok(Box::new(answer))
    }

    /// One attempt, classified. It sets no timer of its own: nothing inside outlives the
    /// deadline. The account limit waits within [`crate::deadline::wait_budget`], the upstream
    /// client ends the attempt at the deadline (`DeadlineExceeded`) and reads a small body whole
    /// before returning, and [`inspect`] only reads bodies that small, already in memory.
    async fn attempt(&self, call: impl Future<Output = Answer>, kind: RouteKind) -> Attempt {
        // Only a 400 is read. Decided before the read's await, so that no borrow of the answer
        // spans it: the future would keep room for a whole response.
        let res = match call.await {
            Ok(res) if inspect::needs_identifier(res.status()) => res,
            answer => return self.classify(answer, None, kind),
        };
        Box::pin(self.read_and_classify(res, kind)).await
    }

    /// A 400, whose classification depends on its body's `identifier` (a rare path: boxed by
    /// the caller so that the usual attempt's future keeps no room for it).
    async fn read_and_classify(&self, res: Response<Body>, kind: RouteKind) -> Attempt {
        match inspect::with_identifier(res).await {
            Ok((res, identifier)) => self.classify(Ok(res), identifier.as_deref(), kind),
            Err(err) => self.classify(Err(err), None, kind),
        }
    }

    /// An answer classified; `identifier` is the body's when it was read.
    fn classify(&self, answer: Answer, identifier: Option<&str>, kind: RouteKind) -> Attempt {
        match answer {
            Ok(res) => Attempt {
                verdict: self
                    .policy
                    .classify_response(kind, res.status(), identifier),
                answer: Ok(res),
                upstream: true,
            },
            Err(err) => Attempt {
                verdict: self.policy.classify_error(kind, &err),
                upstream: err.is_retryable() || matches!(err, GatewayError::DeadlineExceeded),
                answer: Err(err),
            },
        }
    }

    /// Why retry number `made` (attempts made so far) after `delay` may not happen, if it may not.
    fn deny(&self, made: u32, delay: Duration, deadline: Option<Deadline>) -> Option<Denied> {
        if made >= self.max_attempts {
            return Some(Denied::MaxAttempts);
        }
        if deadline.is_some_and(|d| Instant::now() + delay + MIN_ATTEMPT_TIME > d.0) {
            return Some(Denied::Deadline);
        }
        // Last: a retry denied for another reason spends no budget.
        (!self.budget.withdraw()).then_some(Denied::Budget)
    }

    /// The final answer: `answer`, or the previous upstream answer when this one never reached
    /// iDenfy; errors after an attempt become responses, all with `x-gateway-attempts`.
    fn finish(&self, answer: Answer, attempts: u32, last: Option<Box<Answer>>) -> Answer {
        let answer = last.map_or(answer, |last| *last);
        if attempts == 0 {
            return answer;
        }
        self.metrics.attempts(attempts);
        let mut res = answer.unwrap_or_else(GatewayError::into_response);
        res.headers_mut()
            .insert(ATTEMPTS_HEADER, attempts_value(attempts));
        Ok(res)
    }
}

/// An answer kept across backoff: a small body is read so that the upstream connection is free
/// while the loop sleeps.
async fn keep(answer: Answer) -> Answer {
    let res = answer?;
    Ok(inspect::buffer_small(res).await?.0)
}

#[cfg(test)]
mod tests;
