//! The binary as an operator runs it: config errors, signals, and what it writes to its logs.

mod support;

use std::process::Command;
use std::sync::Arc;

use http::{Method, StatusCode};
use support::gateway::{config_text, send, ACCOUNT_AND_TEAM};
use support::process::{GatewayProcess, BIN};
use support::upstream::{MockUpstream, Reply};

/// Runs the binary with `args` followed by a config file holding `text`; its exit code and stderr.
fn with_config(args: &[&str], text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN).args(args).arg(&file).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_exits_64_naming_every_bad_key() {
    let text = r#"
[upstream]
deadline = "soon"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
[[team]]
name = "a"
token = "t1"
[[team]]
name = "b"
token = "t2"
rate = "fast"
"#;
    let (code, stderr) = with_config(&["check-config", "--config"], text);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains(r#"team[1].rate: expected N/s, N/m or N/h, got "fast""#),
        "{stderr}"
    );
    assert!(stderr.contains("upstream.deadline:"), "{stderr}");
}

#[test]
fn check_config_refuses_durations_outside_their_range_naming_the_key() {
    let text = r#"
[upstream]
deadline = "100y"
attempt_timeout = "0s"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
[[team]]
name = "a"
"#;
    let (code, stderr) = with_config(&["check-config", "--config"], text);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(r#"upstream.deadline: must be between 100ms and 1h, got "100y""#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"upstream.attempt_timeout: must be between 10ms and 1h, got "0s""#),
        "{stderr}"
    );
}

#[test]
fn check_config_names_unknown_keys_and_unset_variables() {
    // An unset variable is this machine's problem, not the file's: 78, not 64.
    let unset = "[listen]\nproxy = \"${IDENFY_GW_TEST_UNSET_VAR}\"\n\
                 [[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n[[team]]\nname = \"a\"\n";
    let (code, stderr) = with_config(&["check-config", "--config"], unset);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains("listen.proxy: environment variable IDENFY_GW_TEST_UNSET_VAR is not set")
    );

    let (code, stderr) = with_config(
        &["check-config", "--config"],
        "[limits]\nmax_wiat = \"2s\"\n",
    );
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("limits") && stderr.contains("max_wiat"),
        "{stderr}"
    );
}

#[test]
fn run_with_a_bad_config_exits_64_before_binding() {
    let (code, stderr) = with_config(&["--config"], "[[team]]\nname = \"x\"\n");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("account: at least one [[account]] is required"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let upstream = MockUpstream::start().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    upstream.push(Reply::Gated(
        gate.clone(),
        Box::new(Reply::json(200, r#"{"status":"APPROVED"}"#)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, config_text(&upstream.url(), ACCOUNT_AND_TEAM)).unwrap();
    let gw = GatewayProcess::start(&file, &[]);

    let url = gw.url("/api/v2/status");
    let slow = tokio::spawn(async move {
        send(
            Method::POST,
            &url,
            &[("authorization", "Bearer team-token")],
            "{}",
        )
        .await
    });
    upstream.wait_for(1).await;
    gw.terminate();
    // Shutdown has begun: readiness flips before the in-flight request is released.
    let admin = format!("http://{}/readyz", gw.admin);
    let mut unready = false;
    for _ in 0..400 {
        if send(Method::GET, &admin, &[], "").await.status == StatusCode::SERVICE_UNAVAILABLE {
            unready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(unready, "readiness did not turn 503 during shutdown");
    gate.notify_one();
    let res = slow.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body.as_ref(), br#"{"status":"APPROVED"}"#);
    let (code, _log) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn secrets_tokens_and_bodies_never_reach_logs_or_metrics() {
    let upstream = MockUpstream::start().await;
    upstream.push(Reply::json(
        500,
        r#"{"identifier":"INTERNAL_ERROR","message":"boom"}"#,
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let accounts = "[[account]]\nname = \"main\"\napi_key = \"${GW_TEST_KEY}\"\napi_secret = \"${GW_TEST_SECRET}\"\n\
                    [[team]]\nname = \"payments\"\ntoken = \"${GW_TEST_TEAM_TOKEN}\"\n";
    std::fs::write(&file, config_text(&upstream.url(), accounts)).unwrap();
    let secret = "sEcReT-9f2c41d7";
    let key = "kEy-77aa01";
    let team_token = "tEaM-5be0c3";
    let gw = GatewayProcess::start(
        &file,
        &[
            ("GW_TEST_KEY", key),
            ("GW_TEST_SECRET", secret),
            ("GW_TEST_TEAM_TOKEN", team_token),
        ],
    );
    let bearer = format!("Bearer {team_token}");
    let body = r#"{"clientId":"person-4411","firstName":"JONAS"}"#;
    for path in ["/api/v2/token", "/api/v2/status", "/nope"] {
        send(
            Method::POST,
            &gw.url(path),
            &[("authorization", &bearer)],
            body,
        )
        .await;
    }
    send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[("authorization", "Bearer tEaM-wrong")],
        body,
    )
    .await;
    let metrics = send(
        Method::GET,
        &format!("http://{}/metrics", gw.admin),
        &[],
        "",
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    gw.terminate();
    let (code, log) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // One access log line per proxied request (four), each a whole JSON object from front.
    let request_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect();
    assert_eq!(request_lines.len(), 4, "request log lines: {log}");
    for line in &request_lines {
        assert_eq!(line["target"], "idenfy_gateway::front", "{line}");
        assert_eq!(
            line["request_id"].as_str().map(str::len),
            Some(32),
            "{line}"
        );
    }
    let basic = "a0V5LTc3YWEwMTpzRWNSZVQtOWYyYzQxZDc"; // base64 of key:secret (prefix)
    for needle in [
        secret,
        key,
        team_token,
        "tEaM-wrong",
        basic,
        "person-4411",
        "JONAS",
        "boom",
    ] {
        assert!(
            !log.contains(needle),
            "{needle} leaked into the log:\n{log}"
        );
        assert!(
            !metrics.contains(needle),
            "{needle} leaked into the metrics"
        );
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(secret));
}

#[tokio::test]
async fn demo_serves_the_printed_curl_commands() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--simulator",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The demo's log: one line a person reads per request.
    let stderr = child.stderr.take().unwrap();
    let (log_tx, log_lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let stdout = child.stdout.take().unwrap();
    let text = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("Ctrl-C stops the demo") {
                break;
            }
        }
        text
    })
    .await
    .unwrap();
    let curl_urls: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("curl"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
        .collect();
    assert_eq!(curl_urls.len(), 5, "{text}");
    let body = r#"{"clientId":"demo-user-1"}"#;
    let json = [("content-type", "application/json")];
    let first = send(Method::POST, curl_urls[0], &json, body).await;
    let second = send(Method::POST, curl_urls[1], &json, body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("x-gateway-dedup"), "leader");
    assert_eq!(first.json()["authToken"].as_str().unwrap().len(), 40);
    assert_eq!(second.header("x-gateway-dedup"), "replayed");
    assert_eq!(second.body, first.body);
    let next_line = || {
        log_lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the demo logs each request")
    };
    let (first_line, second_line) = (next_line(), next_line());
    assert_eq!(
        first_line.split(", ").take(3).collect::<Vec<_>>(),
        [
            "POST /api/v2/token -> 201",
            "sent to iDenfy (dedup leader)",
            "1 attempt"
        ],
        "{first_line}"
    );
    assert!(
        second_line.starts_with(
            "POST /api/v2/token -> 201, live session replayed, not sent to iDenfy (dedup replayed), no attempt"
        ),
        "{second_line}"
    );
    assert!(
        !first_line.contains('\x1b'),
        "no colour into a pipe: {first_line:?}"
    );
    let metrics = send(Method::GET, curl_urls[2], &[], "").await;
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("idenfy_gateway_sessions_created_total")
    );
    // 4. and 5.: finishing the session sends its webhook through the gateway, which ends replay.
    let scan_ref = first.json()["scanRef"].as_str().unwrap().to_owned();
    let finish_url = curl_urls[3].replace("SCANREF", &scan_ref);
    let finished = send(Method::POST, &finish_url, &[], r#"{"status":"APPROVED"}"#).await;
    assert_eq!(finished.status, StatusCode::OK);
    assert_eq!(
        finished.json()["webhook"]["delivered"],
        true,
        "the gateway acknowledged"
    );
    let third = send(Method::POST, curl_urls[4], &json, body).await;
    assert_eq!(third.header("x-gateway-dedup"), "leader");
    assert_ne!(third.json()["scanRef"], first.json()["scanRef"]);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary with `args` to its end; its exit code and stderr.
fn run_to_end(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_busy_simulator_port_is_named_once_without_colour() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_end(
        &[
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--simulator",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "printed once: {stderr}");
    assert!(
        stderr.starts_with(&format!(
            "idenfy-gateway: simulator: cannot listen on {addr}: "
        )),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn a_busy_proxy_port_is_named_once_without_colour() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    let text = format!(
        "[listen]\nproxy = \"{addr}\"\nadmin = \"127.0.0.1:0\"\n[log]\nformat = \"human\"\n{ACCOUNT_AND_TEAM}"
    );
    std::fs::write(&file, text).unwrap();
    let (code, stderr) = run_to_end(
        &["run", "--config", file.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let fatal: Vec<&str> = stderr.lines().filter(|l| l.contains("in use")).collect();
    assert_eq!(
        fatal,
        [format!("idenfy-gateway: cannot listen on listen.proxy {addr}: Address already in use (os error 98)")],
        "{stderr}"
    );
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}
