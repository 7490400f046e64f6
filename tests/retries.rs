//! The retry metric agrees with the answers, end to end: a real gateway in front of an upstream
//! that answers 429 to everything. A retry is counted when it is sent, so the retries counted
//! are the answers' `x-gateway-attempts` minus one, summed, whether the budget, the account limit
//! or nothing stopped the others.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use support::gateway::{metric, send, with_mock_upstream, Answer, TestGateway, BEARER};
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

/// A first retry waits at most `base` (20 ms); an account paused by ten 429s in a row waits
/// `cap` (300 ms); the account limit waits 1 ms for a cell. The budget: 1 retry/s over its
/// 10 s window, plus a tenth of the requests.
const CONFIG: &str = r#"
[retry]
max_attempts = 4
base = "20ms"
cap = "300ms"
budget_ratio = 0.1
min_retries_per_second = 1

[limits]
max_wait = "1ms"
"#;

fn throttled(retry_after: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json".to_string())];
    headers.extend(retry_after.map(|s| ("retry-after", s.to_string())));
    Reply::Respond {
        status: 429,
        headers,
        body: r#"{"identifier":"TOO_MANY_REQUESTS","message":"slow down"}"#.into(),
    }
}

async fn status(gw: &TestGateway) -> Answer {
    let url = gw.url("/api/v2/status");
    send(Method::POST, &url, &[BEARER], r#"{"scanRef":"s"}"#).await
}

/// `x-gateway-attempts`, 0 for an answer that never reached the upstream.
fn attempts(answer: &Answer) -> u64 {
    answer.header("x-gateway-attempts").parse().unwrap_or(0)
}

/// `n` requests whose first attempts all reach the upstream before any is answered 429: the
/// account's streak of throttled answers reaches `n`, and its pause `retry.cap`, longer than any
/// first retry's backoff.
async fn throttled_together(
    upstream: &MockUpstream,
    gw: &Arc<TestGateway>,
    n: usize,
) -> Vec<Answer> {
    let gates: Vec<_> = (0..n).map(|_| Arc::new(Notify::new())).collect();
    for gate in &gates {
        upstream.push(Reply::Gated(gate.clone(), Box::new(throttled(None))));
    }
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { status(&gw).await })
        })
        .collect();
    upstream.wait_for(n).await;
    for gate in &gates {
        gate.notify_one();
    }
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

async fn wait_for_the_pause_to_end(gw: &TestGateway) {
    for _ in 0..1000 {
        if metric(&gw.metrics().await, "idenfy_gateway_account_paused{") == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the account pause never ended");
}

#[tokio::test]
async fn retries_counted_are_the_retry_attempts_the_answers_report() {
    let (upstream, gw) = with_mock_upstream(CONFIG).await;
    let gw = Arc::new(gw);
    // The account limit refuses every retry: the pause outlasts the backoff.
    let mut answers = throttled_together(&upstream, &gw, 10).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.header("x-gateway-attempts"), "1");
    }
    wait_for_the_pause_to_end(&gw).await;
    // No pause any more (`Retry-After: 0`): the budget refuses most retries, lets some go.
    upstream.set_default(throttled(Some("0")));
    for _ in 0..30 {
        answers.push(status(&gw).await);
    }

    let text = gw.metrics().await;
    let retries = metric(&text, "idenfy_gateway_retries_total{") as u64;
    let sent: u64 = answers.iter().map(attempts).sum();
    let reported: u64 = answers.iter().map(|a| attempts(a).saturating_sub(1)).sum();
    assert_eq!(
        retries, reported,
        "retries_total against x-gateway-attempts − 1"
    );
    assert_eq!(upstream.count() as u64, sent);
    assert!(retries > 0, "some retries went");
    let denied = |cause: &str| {
        metric(
            &text,
            &format!("idenfy_gateway_retries_denied_total{{cause=\"{cause}\"}}"),
        )
    };
    assert!(denied("account_limit") > 0.0);
    assert!(denied("budget") > 0.0);
}
