//! Live reload of the real binary: SIGHUP with a valid file swaps it in (new tokens work at
//! once, a non-live key is named "restart needed"), with an invalid file keeps the running
//! config and logs every problem; requests in flight during either swap all succeed.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};
use support::gateway::{config_text, metric, send};
use support::process::GatewayProcess;
use support::upstream::{MockUpstream, Reply};
use support::wire::Reader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ACCOUNT: &str = r#"
[[account]]
name = "main"
api_key = "test-key"
api_secret = "test-secret"
"#;

fn team(tokens: &str, rate: &str) -> String {
    format!("[[team]]\nname = \"payments\"\ntokens = [{tokens}]\nrate = \"{rate}\"\nburst = 1000\n")
}

async fn status(gw_url: &str, token: &str) -> StatusCode {
    let auth = format!("Bearer {token}");
    send(Method::POST, gw_url, &[("authorization", &auth)], "{}")
        .await
        .status
}

/// Sends requests with `token` from four tasks until `stop`; every status they got.
fn load(
    url: String,
    token: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<StatusCode>> {
    tokio::spawn(async move {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        seen.push(status(&url, token).await);
                    }
                    seen
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all
    })
}

#[tokio::test]
async fn sighup_swaps_a_valid_config_and_refuses_an_invalid_one_without_failing_a_request() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let gate = Arc::new(tokio::sync::Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(Reply::json(200, r#"{"status":"HELD"}"#)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let first = config_text(
        &upstream.url(),
        &format!("{ACCOUNT}{}", team("\"tok-a\"", "1000/s")),
    );
    std::fs::write(&file, &first).unwrap();
    let gw = GatewayProcess::start(&file, &[]);
    let url = gw.url("/api/v2/status");
    let metrics_url = format!("http://{}/metrics", gw.admin);

    // One request held by the upstream across both reloads.
    let held = {
        let url = url.clone();
        tokio::spawn(async move { status(&url, "tok-a").await })
    };
    upstream.wait_for(1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let during = load(url.clone(), "tok-a", stop.clone());
    assert_eq!(status(&url, "tok-b").await, StatusCode::UNAUTHORIZED);

    // A valid file: a second token, another quota, another proxy address (not live).
    let second = config_text(
        &upstream.url(),
        &format!("{ACCOUNT}{}", team("\"tok-a\", \"tok-b\"", "2000/s")),
    )
    .replace("proxy = \"127.0.0.1:0\"", "proxy = \"127.0.0.1:1\"");
    std::fs::write(&file, &second).unwrap();
    gw.hangup();
    let log = gw.wait_for_log("config reloaded", 1).await;
    assert!(log.contains("restart needed for listen.proxy"), "{log}");
    assert!(!log.contains("restart needed for team"), "{log}");
    assert_eq!(
        status(&url, "tok-b").await,
        StatusCode::OK,
        "the new token is live"
    );

    // An invalid file: every problem logged, the running config stays.
    std::fs::write(
        &file,
        second.replace("rate = \"2000/s\"", "rate = \"fast\"\ncolour = \"red\""),
    )
    .unwrap();
    gw.hangup();
    let log = gw
        .wait_for_log("config reload refused; the running config stays", 1)
        .await;
    for problem in ["team[0].rate", "team[0].colour"] {
        assert!(log.contains(problem), "{problem} not logged:\n{log}");
    }
    assert_eq!(
        status(&url, "tok-b").await,
        StatusCode::OK,
        "still the second config"
    );

    stop.store(true, Ordering::Relaxed);
    let statuses = during.await.unwrap();
    assert!(
        statuses.len() > 4,
        "{} requests during the reloads",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "a request failed during a reload: {statuses:?}"
    );
    gate.notify_one();
    assert_eq!(
        held.await.unwrap(),
        StatusCode::OK,
        "the held request finished"
    );

    let metrics = send(Method::GET, &metrics_url, &[], "").await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    let reloads = |outcome: &str| {
        metric(
            &metrics,
            &format!("idenfy_gateway_config_reloads_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!((reloads("ok"), reloads("invalid")), (1.0, 1.0), "{metrics}");
    let hash = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest(second.as_bytes())[..6])
    };
    let info = metrics
        .lines()
        .find(|l| l.starts_with("idenfy_gateway_build_info{"))
        .unwrap();
    assert!(info.contains(&format!("config_hash=\"{hash}\"")), "{info}");
    gw.terminate();
    let (code, _) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

/// A connection kept alive across a reload takes its next request with the new config: the
/// listener keeps the stack's handle per connection, and a reload must not leave it on the old
/// one (here the old token would still work, and the new one would not).
#[tokio::test]
async fn a_kept_alive_connection_takes_its_next_request_with_the_reloaded_config() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let config = |tokens: &str| {
        config_text(
            &upstream.url(),
            &format!("{ACCOUNT}{}", team(tokens, "1000/s")),
        )
    };
    std::fs::write(&file, config("\"tok-a\"")).unwrap();
    let gw = GatewayProcess::start(&file, &[]);
    let mut conn = Reader::new(TcpStream::connect(gw.proxy).await.unwrap());
    let mut ask = async |token: &str| {
        let head = format!(
            "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {token}\r\n\
             content-length: 2\r\n\r\n{{}}"
        );
        conn.stream.write_all(head.as_bytes()).await.unwrap();
        conn.response(false).await.status
    };
    assert_eq!(ask("tok-a").await, 200);

    std::fs::write(&file, config("\"tok-b\"")).unwrap();
    gw.hangup();
    gw.wait_for_log("config reloaded", 1).await;
    assert_eq!(
        ask("tok-b").await,
        200,
        "the new token, on the same connection"
    );
    assert_eq!(ask("tok-a").await, 401, "the old token is gone");
    let received = upstream.received();
    assert_eq!(received.len(), 2, "the two requests taken went upstream");
    for request in &received {
        assert_eq!(request.uri, "/api/v2/status");
        assert_eq!(
            request.headers["authorization"],
            "Basic dGVzdC1rZXk6dGVzdC1zZWNyZXQ="
        );
    }
    gw.terminate();
}

#[tokio::test]
async fn quotas_keep_their_state_across_a_reload_unless_they_change() {
    use idenfy_gateway::config::Config;
    use idenfy_gateway::reload::Outcome;
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    // One request an hour, none waiting: the second is refused with 429.
    let text = |tokens: &str, rate: &str| {
        config_text(
            &upstream.url(),
            &format!("{ACCOUNT}[[team]]\nname = \"payments\"\ntokens = [{tokens}]\nrate = \"{rate}\"\nburst = 1\n\n[limits]\nmax_wait = \"0s\"\n"),
        )
    };
    std::fs::write(&file, text("\"tok-a\"", "1/h")).unwrap();
    let config = Config::load(&file).unwrap();
    let running = idenfy_gateway::server::start_from(file.clone(), config)
        .await
        .unwrap();
    let url = format!("http://{}/api/v2/status", running.proxy_addr);
    assert_eq!(status(&url, "tok-a").await, StatusCode::OK);
    assert_eq!(status(&url, "tok-a").await, StatusCode::TOO_MANY_REQUESTS);

    // The team's quota is unchanged (a token added): its spent cell stays spent.
    std::fs::write(&file, text("\"tok-a\", \"tok-b\"", "1/h")).unwrap();
    assert_eq!(running.reload().await, Outcome::Reloaded);
    assert_eq!(status(&url, "tok-b").await, StatusCode::TOO_MANY_REQUESTS);

    // Its rate changed: a new quota.
    std::fs::write(&file, text("\"tok-a\", \"tok-b\"", "2/h")).unwrap();
    assert_eq!(running.reload().await, Outcome::Reloaded);
    assert_eq!(status(&url, "tok-b").await, StatusCode::OK);

    // An invalid file changes nothing.
    std::fs::write(&file, text("\"tok-a\"", "often")).unwrap();
    assert_eq!(running.reload().await, Outcome::Invalid);
    assert_eq!(status(&url, "tok-b").await, StatusCode::TOO_MANY_REQUESTS);
    running.shutdown().await;
}

/// The binary with `RUST_LOG` unset (the config's `log.level` applies), its stderr lines
/// gathered; the proxy address from its "gateway listening" line.
fn start_without_rust_log(
    file: &std::path::Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    Arc<std::sync::Mutex<String>>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(support::process::BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(file)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("gateway listening") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    (child, json["proxy"].as_str().unwrap().parse().unwrap(), log)
}

#[tokio::test]
async fn sighup_applies_a_new_log_level() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    // The listener's line, but no access lines.
    let quiet = config_text(
        &upstream.url(),
        &format!("{ACCOUNT}{}", team("\"tok-a\"", "100/s")),
    )
    .replace(
        "level = \"warn\"",
        "level = \"warn,idenfy_gateway::server=info\"",
    )
    .replace("format = \"human\"", "format = \"json\"");
    std::fs::write(&file, &quiet).unwrap();
    let (mut child, proxy, log) = start_without_rust_log(&file);
    let url = format!("http://{proxy}/api/v2/status");
    let access_lines = || {
        log.lock()
            .unwrap()
            .matches("\"message\":\"request\"")
            .count()
    };
    assert_eq!(status(&url, "tok-a").await, StatusCode::OK);

    std::fs::write(
        &file,
        quiet.replace(
            "level = \"warn,idenfy_gateway::server=info\"",
            "level = \"info\"",
        ),
    )
    .unwrap();
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    for _ in 0..1000 {
        if log.lock().unwrap().contains("log level changed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        log.lock().unwrap().contains("log level changed"),
        "{}",
        log.lock().unwrap()
    );
    assert_eq!(access_lines(), 0, "no access line at warn");
    assert_eq!(status(&url, "tok-a").await, StatusCode::OK);
    for _ in 0..1000 {
        if access_lines() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(access_lines(), 1, "{}", log.lock().unwrap());
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
