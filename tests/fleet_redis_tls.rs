//! Fleet mode on a Redis that asks for TLS and a password, as a production one does: a
//! `redis-server` of the test's own with a TLS port (the fixture certificate, `localhost`) and
//! `requirepass`. The gateway reaches it with `rediss://`, the password from
//! `state.redis_password_file` and the CA from `state.redis_ca_file`; a wrong password or an
//! untrusted certificate leaves the backend down, and requests fall back.

mod support;

use http::StatusCode;
use support::fleet::{account_and_team, status, wait_for_backend, wait_for_metric, HIGH};
use support::gateway::{config_text, metric, TestGateway};
use support::redis_server::{free_port, RedisServer};
use support::tls::fixture;
use support::upstream::{MockUpstream, Reply};

const PASSWORD: &str = "fleet-s3cret";

/// A Redis with `requirepass` and a TLS port; that port.
fn secured_redis() -> Option<(RedisServer, u16)> {
    let tls_port = free_port();
    let args = [
        "--requirepass",
        PASSWORD,
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &fixture("localhost.pem"),
        "--tls-key-file",
        &fixture("localhost.key"),
        "--tls-ca-cert-file",
        &fixture("localhost.pem"),
        "--tls-auth-clients",
        "no",
    ];
    let redis = RedisServer::start_with(args.iter().map(|a| a.to_string()).collect())?;
    Some((redis, tls_port))
}

/// The gateway's config: `state` lines after the backend and URL.
fn config(upstream: &MockUpstream, url: &str, state: &str) -> String {
    let accounts = account_and_team(HIGH, HIGH);
    config_text(
        &upstream.url(),
        &format!(
            "{accounts}\n[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\ntimeout = \"500ms\"\n{state}\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_decided_over_rediss_with_the_password_from_a_file_and_a_private_ca() {
    let Some((redis, tls_port)) = secured_redis() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let state = format!(
        "redis_password_file = \"{}\"\nredis_ca_file = \"{}\"\n",
        password.display(),
        fixture("localhost.pem")
    );
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let gw = TestGateway::start(&config(&upstream, &url, &state)).await;
    wait_for_backend(&gw, 1.0).await;
    assert_eq!(status(&gw).await.status, StatusCode::OK);
    let text = gw.metrics().await;
    assert!(
        metric(
            &text,
            "idenfy_gateway_state_round_trip_seconds_count{operation=\"quota\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&text, "idenfy_gateway_state_fallbacks_total"), 0.0);
    // Redis ran the decisions' scripts (asked through the plain port, with the password).
    let plain = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port());
    let mut conn = redis::Client::open(plain)
        .and_then(|c| c.get_connection())
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("cmdstat_evalsha:calls=")),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_an_untrusted_certificate_leaves_the_backend_down() {
    let Some((_redis, tls_port)) = secured_redis() else {
        return;
    };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let wrong_password = format!("redis_ca_file = \"{}\"\n", fixture("localhost.pem"));
    let wrong = url.replace("rediss://", "rediss://:not-the-password@");
    // The public roots do not know the fixture's self-signed certificate.
    let untrusted = url.replace("rediss://", &format!("rediss://:{PASSWORD}@"));
    for (url, state) in [(wrong, wrong_password.as_str()), (untrusted, "")] {
        let gw = TestGateway::start(&config(&upstream, &url, state)).await;
        wait_for_metric(&gw, "idenfy_gateway_state_errors_total", 1.0).await;
        // Served all the same, from the replica's own quotas (`on_unavailable = "local"`).
        assert_eq!(status(&gw).await.status, StatusCode::OK);
        let text = gw.metrics().await;
        assert_eq!(metric(&text, "idenfy_gateway_state_backend_up"), 0.0);
        assert!(metric(&text, "idenfy_gateway_state_fallbacks_total") >= 1.0);
    }
}
