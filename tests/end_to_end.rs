//! The gateway in front of the iDenfy simulator: what iDenfy itself would see.

mod support;

use http::{Method, StatusCode};
use idenfy_gateway::simulator::{Credentials, Faults, Simulator, SimulatorConfig};
use support::gateway::{config_text, send, TestGateway, BEARER};

fn accounts(key: &str, secret: &str) -> String {
    format!(
        "[[account]]\nname = \"main\"\n{key}\napi_secret = \"{secret}\"\nrate = \"10000/s\"\nburst = 10000\n\
         [[team]]\nname = \"payments\"\ntoken = \"team-token\"\nrate = \"10000/s\"\nburst = 10000\n\
         [retry]\nbase = \"1ms\"\ncap = \"5ms\"\n"
    )
}

async fn setup() -> (Simulator, TestGateway) {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let cfg = SimulatorConfig::default();
    let key = format!("api_key = \"{}\"", cfg.api_key);
    let gw = TestGateway::start(&config_text(&sim.url(), &accounts(&key, &cfg.api_secret))).await;
    (sim, gw)
}

#[tokio::test]
async fn idenfy_sees_one_token_request_for_a_burst_of_clicks() {
    let (sim, gw) = setup().await;
    let url = gw.url("/api/v2/token");
    let clicks: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                send(Method::POST, &url, &[BEARER], r#"{"clientId":"user-42"}"#).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for click in clicks {
        let res = click.await.unwrap();
        assert_eq!(res.status, StatusCode::CREATED, "{:?}", res.body);
        tokens.push(res.json()["authToken"].as_str().unwrap().to_string());
    }
    assert!(tokens.iter().all(|t| t == &tokens[0] && t.len() == 40));
    let seen = sim.counters();
    assert_eq!(seen.token_requests_for("user-42"), 1);
    assert_eq!(seen.tokens_created_for("user-42"), 1);
    assert_eq!(seen.rejections.conflict, 0);
}

#[tokio::test]
async fn a_session_opened_elsewhere_comes_back_as_idenfys_409_once() {
    let (sim, gw) = setup().await;
    let direct = send(
        Method::POST,
        &format!("{}/api/v2/token", sim.url()),
        &[("authorization", &sim.authorization())],
        r#"{"clientId":"user-43"}"#,
    )
    .await;
    assert_eq!(direct.status, StatusCode::CREATED);
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"user-43"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.header("x-gateway-attempts"), "1");
    assert_eq!(sim.counters().token_requests_for("user-43"), 2);
}

#[tokio::test]
async fn rides_out_a_short_idenfy_outage() {
    let (sim, gw) = setup().await;
    sim.set_faults(Faults {
        status: 503,
        next: 2,
        ..Faults::default()
    })
    .unwrap();
    let res = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER],
        r#"{"scanRef":"unknown"}"#,
    )
    .await;
    // The third attempt reaches the real endpoint, which does not know this scanRef.
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.header("x-gateway-attempts"), "3");
    assert_eq!(sim.counters().rejections.faults, 2);
}

#[tokio::test]
async fn validation_spends_nothing_at_idenfy() {
    let (sim, gw) = setup().await;
    let res = send(
        Method::POST,
        &gw.url("/api/v2/token"),
        &[BEARER],
        r#"{"clientId":"u","sessionLength":5}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(res.json()["identifier"], "BAD_VALUE");
    assert_eq!(sim.counters().total_requests(), 0);
}

#[tokio::test]
async fn a_rotated_key_pair_reaches_idenfy_without_restart() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    sim.update_settings(|s| {
        s.credentials.push(Credentials {
            api_key: "rotated-key".into(),
            api_secret: "rotated-secret".into(),
        })
    });
    let cfg = SimulatorConfig::default();
    // A Kubernetes secret volume: files are symlinks into `..data`, itself a symlink to a
    // timestamped directory; kubelet rotates by swapping `..data` in one rename.
    let dir = tempfile::tempdir().unwrap();
    let write_version = |name: &str, key: &str, secret: &str| {
        let version = dir.path().join(name);
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("api-key"), key).unwrap();
        std::fs::write(version.join("api-secret"), secret).unwrap();
        let staged = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(name, &staged).unwrap();
        std::fs::rename(&staged, dir.path().join("..data")).unwrap();
    };
    write_version("..2026_11_26_v1", &cfg.api_key, &cfg.api_secret);
    for file in ["api-key", "api-secret"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.path().join(file)).unwrap();
    }
    let key = format!(
        "api_key_file = \"{}\"",
        dir.path().join("api-key").display()
    );
    let text = config_text(&sim.url(), &accounts(&key, "unused")).replace(
        "api_secret = \"unused\"",
        &format!(
            "api_secret_file = \"{}\"",
            dir.path().join("api-secret").display()
        ),
    );
    let gw = TestGateway::start(&text).await;
    let token = |id: &str| format!(r#"{{"clientId":"{id}"}}"#);
    assert_eq!(
        send(
            Method::POST,
            &gw.url("/api/v2/token"),
            &[BEARER],
            token("a")
        )
        .await
        .status,
        StatusCode::CREATED
    );
    write_version("..2026_11_26_v2", "rotated-key", "rotated-secret");
    let rotated = "Basic cm90YXRlZC1rZXk6cm90YXRlZC1zZWNyZXQ=";
    let mut seen = false;
    for i in 0..200 {
        let res = send(
            Method::POST,
            &gw.url("/api/v2/token"),
            &[BEARER],
            token(&format!("b{i}")),
        )
        .await;
        assert_eq!(res.status, StatusCode::CREATED);
        if sim.counters().last_authorization.as_deref() == Some(rotated) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "the rotated pair never reached iDenfy");
    assert_eq!(sim.counters().rejections.unauthorized, 0);
}
