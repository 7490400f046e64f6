//! Fleet mode's test setup: gateways on one `redis-server`, the config they share.

use std::time::Duration;

use http::Method;

use crate::support::gateway::{config_text, metric, send, Answer, TestGateway, BEARER};
use crate::support::redis_server::RedisServer;
use crate::support::upstream::MockUpstream;

/// Quotas that no test meets.
pub const HIGH: &str = "rate = \"10000/s\"\nburst = 10000";

/// Redis's answers on a busy test machine can take longer than the 50 ms default; a killed
/// Redis refuses connections at once, so the fallback tests do not wait for this.
pub const TIMEOUT: &str = "timeout = \"500ms\"\n";

/// One account (`main`) and its teams `payments` (token `team-token`) and `growth` (token
/// `growth-token`); `account_rate` and `team_rate` set their quotas.
pub fn account_and_team(account_rate: &str, team_rate: &str) -> String {
    format!(
        r#"
[[account]]
name = "main"
api_key = "test-key"
api_secret = "test-secret"
{account_rate}

[[team]]
name = "payments"
token = "team-token"
{team_rate}

[[team]]
name = "growth"
token = "growth-token"
{team_rate}
"#
    )
}

/// The config of a fleet on `redis` in front of `upstream`; `extra` is appended before
/// `[state]`, `state` after it.
pub fn fleet_config(
    upstream: &MockUpstream,
    redis: &RedisServer,
    accounts: &str,
    extra: &str,
    state: &str,
) -> String {
    config_text(
        &upstream.url(),
        &format!(
            "{accounts}{extra}\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n{state}\n{TIMEOUT}",
            redis.url()
        ),
    )
}

/// Two gateways (A and B) in-process, sharing nothing but `redis`, connected to it.
pub async fn fleet(
    upstream: &MockUpstream,
    redis: &RedisServer,
    accounts: &str,
    extra: &str,
    state: &str,
) -> (TestGateway, TestGateway) {
    let text = fleet_config(upstream, redis, accounts, extra, state);
    let (a, b) = (
        TestGateway::start(&text).await,
        TestGateway::start(&text).await,
    );
    // Connected before the test starts (a first connection may take longer than
    // `state.timeout` on a busy machine, and the first requests would fall back).
    wait_for_backend(&a, 1.0).await;
    wait_for_backend(&b, 1.0).await;
    (a, b)
}

/// A status request of team `payments`, as the fleet tests send it.
pub async fn status(gw: &TestGateway) -> Answer {
    status_as(gw, BEARER).await
}

/// A status request with `team`'s credentials header.
pub async fn status_as(gw: &TestGateway, team: (&str, &str)) -> Answer {
    send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[team],
        r#"{"scanRef":"s"}"#,
    )
    .await
}

/// Waits (at most 10 s) until the gateway's `idenfy_gateway_state_backend_up` is `up`.
pub async fn wait_for_backend(gw: &TestGateway, up: f64) {
    wait_for_metric(gw, "idenfy_gateway_state_backend_up", up).await;
}

/// Waits (at most 10 s) until the sum of the samples starting with `prefix` is at least `at_least`
/// (or exactly `at_least` for the backend gauge, which goes down too).
pub async fn wait_for_metric(gw: &TestGateway, prefix: &str, at_least: f64) {
    for _ in 0..500 {
        let value = metric(&gw.metrics().await, prefix);
        let reached = match prefix {
            "idenfy_gateway_state_backend_up" => value == at_least,
            _ => value >= at_least,
        };
        if reached {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{prefix} did not reach {at_least} in 10 s");
}
