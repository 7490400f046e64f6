//! A gateway started in-process on `127.0.0.1:0`, and a small HTTP client.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use idenfy_gateway::config::Config;
use idenfy_gateway::server::Running;

pub use crate::support::http::Answer;
use crate::support::http::Client;

/// The config the tests start from: one account, one team with a token, listeners on `:0`.
/// `{upstream}` is replaced by the upstream URL; `extra` is appended.
pub fn config_text(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
shutdown_grace = "5s"

[upstream]
url = "{upstream}"
connect_timeout = "1s"
attempt_timeout = "2s"
deadline = "5s"

[log]
format = "human"
level = "warn"
{extra}
"#
    )
}

/// The usual account and team: key `test-key`, secret `test-secret`, team token `team-token`.
/// Quotas are high so that only the tests about limits meet them.
pub const ACCOUNT_AND_TEAM: &str = r#"
[[account]]
name = "main"
api_key = "test-key"
api_secret = "test-secret"
rate = "10000/s"
burst = 10000

[[team]]
name = "payments"
token = "team-token"
rate = "10000/s"
burst = 10000
"#;

/// The usual team's credentials, as a request header.
pub const BEARER: (&str, &str) = ("authorization", "Bearer team-token");

/// A scripted upstream, and a gateway in front of it with the usual account and team plus `extra`.
pub async fn with_mock_upstream(
    extra: &str,
) -> (crate::support::upstream::MockUpstream, TestGateway) {
    let upstream = crate::support::upstream::MockUpstream::start().await;
    let text = config_text(&upstream.url(), &format!("{ACCOUNT_AND_TEAM}{extra}"));
    (upstream, TestGateway::start(&text).await)
}

/// Like [`with_mock_upstream`], with `lines` (each ending in a newline) added to `[listen]`.
pub async fn with_mock_upstream_listen(
    lines: &str,
) -> (crate::support::upstream::MockUpstream, TestGateway) {
    let upstream = crate::support::upstream::MockUpstream::start().await;
    let gw = start_with(&upstream.url(), lines, "").await;
    (upstream, gw)
}

/// A gateway in front of the upstream at `url`, with the usual account and team, `lines` (each
/// ending in a newline) added to `[listen]`, and `extra` appended.
pub async fn start_with(url: &str, lines: &str, extra: &str) -> TestGateway {
    let text = config_text(url, &format!("{ACCOUNT_AND_TEAM}{extra}"))
        .replace("[listen]\n", &format!("[listen]\n{lines}"));
    TestGateway::start(&text).await
}

/// `Basic base64(test-key:test-secret)`.
pub const UPSTREAM_AUTH: &str = "Basic dGVzdC1rZXk6dGVzdC1zZWNyZXQ=";

pub struct TestGateway {
    pub running: Running,
}

impl TestGateway {
    pub async fn start(text: &str) -> TestGateway {
        let config =
            Config::parse(text, &|name| std::env::var(name).ok()).expect("test config is valid");
        TestGateway {
            running: idenfy_gateway::server::start(config)
                .await
                .expect("gateway starts"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.proxy_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.proxy_addr)
    }

    /// Waits (at most 10 s) until no request is in flight: answered, or dropped.
    pub async fn wait_for_no_request_in_flight(&self) {
        for _ in 0..500 {
            if metric(&self.metrics().await, "idenfy_gateway_requests_in_flight") == 0.0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("a request is still in flight after 10 s");
    }

    pub async fn metrics(&self) -> String {
        let res = send(
            Method::GET,
            &format!("http://{}/metrics", self.running.admin_addr),
            &[],
            "",
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
        String::from_utf8(res.body.to_vec()).unwrap()
    }
}

/// Sends one request over HTTP/1.1; panics when no answer comes.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("valid request");
    Client::default().send(req).await.expect("an answer")
}

/// Value of a metric sample line that starts with `prefix` (name and labels), 0 if absent.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
