//! Live reload on a change of the config file, without SIGHUP, over real sockets: a valid new
//! file (written beside and renamed over, as editors and kubelet do) is swapped in, an invalid
//! one is refused and the running config stays.

mod support;

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use idenfy_gateway::config::Config;
use support::gateway::{config_text, metric, send};
use support::upstream::{MockUpstream, Reply};

fn text(upstream: &str, token: &str) -> String {
    let teams = format!(
        "[[account]]\nname = \"main\"\napi_key = \"test-key\"\napi_secret = \"test-secret\"\n\
         [[team]]\nname = \"payments\"\ntokens = [\"{token}\"]\n"
    );
    config_text(upstream, &teams)
}

/// Replaces the file's content at once: written beside it, then renamed over it.
fn replace(file: &Path, content: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

async fn status(url: &str, token: &str) -> StatusCode {
    let auth = format!("Bearer {token}");
    send(Method::POST, url, &[("authorization", &auth)], "{}")
        .await
        .status
}

/// Waits (at most 10 s) until `idenfy_gateway_config_reloads_total{outcome}` reaches `n`.
async fn reloads(admin: std::net::SocketAddr, outcome: &str, n: f64) {
    let name = format!("idenfy_gateway_config_reloads_total{{outcome=\"{outcome}\"}}");
    let mut text = String::new();
    for _ in 0..500 {
        let res = send(Method::GET, &format!("http://{admin}/metrics"), &[], "").await;
        text = String::from_utf8_lossy(&res.body).into_owned();
        if metric(&text, &name) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts: Vec<_> = text
        .lines()
        .filter(|l| l.contains("reloads_total{"))
        .collect();
    panic!("{name} did not reach {n} within 10 s: {counts:?}");
}

#[tokio::test]
async fn a_change_of_the_config_file_is_swapped_in_without_sighup() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let first = text(&upstream.url(), "tok-a");
    std::fs::write(&file, &first).unwrap();
    let config = Config::parse(&first, &|_| None).unwrap();
    let gw = idenfy_gateway::server::start_from(file.clone(), config)
        .await
        .unwrap();
    let url = format!("http://{}/api/v2/status", gw.proxy_addr);
    assert_eq!(status(&url, "tok-a").await, StatusCode::OK);

    replace(&file, &text(&upstream.url(), "tok-b"));
    reloads(gw.admin_addr, "ok", 1.0).await;
    assert_eq!(status(&url, "tok-b").await, StatusCode::OK);
    assert_eq!(status(&url, "tok-a").await, StatusCode::UNAUTHORIZED);

    replace(&file, "[listen\nthis is not toml");
    reloads(gw.admin_addr, "invalid", 1.0).await;
    assert_eq!(status(&url, "tok-b").await, StatusCode::OK);
    assert_eq!(upstream.count(), 3);
    gw.shutdown().await;
}
