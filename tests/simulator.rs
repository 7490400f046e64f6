//! The simulator over real loopback sockets: what a client of iDenfy sees, and what the simulator
//! reports it saw.

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use idenfy_gateway::simulator::{
    Credentials, Faults, Finish, Simulator, SimulatorConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET,
};
use serde_json::{json, Value};
use sha2::Sha256;
use support::http::{basic, Answer, Client};
use support::upstream::{MockUpstream, Reply};

const TOKEN: &str = "/api/v2/token";

/// A simulator and a client that knows its credentials.
struct Sim {
    sim: Simulator,
    client: Client,
    auth: String,
}

impl Sim {
    async fn start() -> Sim {
        Sim::with(SimulatorConfig::default()).await
    }

    async fn with(config: SimulatorConfig) -> Sim {
        let sim = Simulator::start(config).await.expect("simulator starts");
        Sim {
            auth: sim.authorization(),
            sim,
            client: Client::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.sim.url(), path)
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.client
            .post_json(&self.url(path), Some(&self.auth), &body)
            .await
    }

    async fn token(&self, body: Value) -> Answer {
        self.post(TOKEN, body).await
    }

    async fn control(&self, method: Method, path: &str, body: Value) -> Answer {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.client.call(method, &self.url(path), None, body).await
    }
}

fn identifier(reply: &Answer) -> Value {
    reply.json()["identifier"].clone()
}

#[tokio::test]
async fn refuses_missing_or_wrong_credentials_with_401() {
    let sim = Sim::start().await;
    let body = json!({"clientId": "c-1"});
    let url = sim.url(TOKEN);
    let wrong = basic(DEFAULT_API_KEY, "not-the-secret");
    for auth in [None, Some(wrong.as_str()), Some("Bearer sim-api-key")] {
        let reply = sim.client.post_json(&url, auth, &body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.json(),
            json!({"message": "Invalid authorization credentials"})
        );
    }
    let counters = sim.sim.counters();
    assert_eq!(counters.rejections.unauthorized, 3);
    assert_eq!(counters.tokens_created_for("c-1"), 0);
    assert_eq!(
        counters.last_authorization.as_deref(),
        Some("Bearer sim-api-key")
    );
}

#[tokio::test]
async fn creates_a_token_with_idenfy_fields() {
    let sim = Sim::start().await;
    let reply = sim
        .token(json!({"clientId": 100000, "firstName": "Ona", "checkLiveness": true}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let body = reply.json();
    let token = body["authToken"].as_str().unwrap();
    assert_eq!(token.len(), 40);
    assert_eq!(body["scanRef"].as_str().unwrap().len(), 36);
    assert_eq!(body["clientId"], json!(100000), "echoed as sent");
    assert_eq!(
        body["redirectUrl"],
        format!("https://ivs.idenfy.com/api/v2/redirect?authToken={token}")
    );
    assert_eq!(body["expiryTime"], 3600);
    assert_eq!(body["sessionLength"], 600);
    assert_eq!(body["digitString"], Value::Null);
    assert_eq!(body["message"], "Token created successfully");
    assert_eq!(body["tokenType"], "IDENTIFICATION");
    assert_eq!(body["firstName"], "ONA");
    assert_eq!(body["checkLiveness"], true);
    let digits = sim
        .token(json!({"clientId": "c-2", "generateDigitString": true, "expiryTime": 60}))
        .await
        .json();
    assert_eq!(digits["digitString"].as_str().unwrap().len(), 8);
    assert_eq!(digits["expiryTime"], 60);
    let counters = sim.sim.counters();
    assert_eq!(counters.token_requests_for("100000"), 1);
    assert_eq!(counters.tokens_created_for("100000"), 1);
    assert_eq!(counters.requests_to(TOKEN), 2);
}

#[tokio::test]
async fn answers_each_validation_identifier() {
    let sim = Sim::start().await;
    let missing = sim.token(json!({"firstName": "Ona"})).await;
    assert_eq!(
        (missing.status, identifier(&missing)),
        (StatusCode::BAD_REQUEST, json!("MISSING_VALUE"))
    );
    let bad = sim
        .token(json!({"clientId": "c", "dateOfBirth": "2001-02-29"}))
        .await;
    assert_eq!(
        (bad.status, identifier(&bad)),
        (StatusCode::BAD_REQUEST, json!("BAD_VALUE"))
    );
    assert!(bad.json()["message"]
        .as_str()
        .unwrap()
        .contains("dateOfBirth"));
    let url = sim.url(TOKEN);
    let malformed = sim
        .client
        .call(Method::POST, &url, Some(&sim.auth), "{\"clientId\":")
        .await;
    assert_eq!(
        (malformed.status, identifier(&malformed)),
        (StatusCode::BAD_REQUEST, json!("JSON_ERROR"))
    );
    let kyb = sim
        .post(
            "/kyb/tokens/",
            json!({"clientId": "c", "tokenType": "FULL"}),
        )
        .await;
    assert_eq!(
        (kyb.status, identifier(&kyb)),
        (StatusCode::BAD_REQUEST, json!("BAD_VALUE"))
    );
    assert_eq!(sim.sim.counters().rejections.invalid, 4);
    assert_eq!(
        sim.sim.counters().token_requests_for("c"),
        1,
        "invalid requests are still received"
    );
}

#[tokio::test]
async fn conflicts_while_the_client_id_has_an_active_session() {
    let sim = Sim::start().await;
    let first = sim
        .token(json!({"clientId": "c-1", "expiryTime": 600}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(
        second.json(),
        json!({"message": "Client ID already exists"})
    );
    assert_eq!(
        sim.token(json!({"clientId": "c-2"})).await.status,
        StatusCode::CREATED
    );

    sim.sim.advance(Duration::from_secs(600));
    let after_expiry = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(after_expiry.status, StatusCode::CREATED);

    let scan_ref = after_expiry.json()["scanRef"].as_str().unwrap().to_owned();
    sim.sim
        .finish(&scan_ref, Finish::new("APPROVED"))
        .await
        .unwrap();
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );

    let counters = sim.sim.counters();
    assert_eq!(counters.token_requests_for("c-1"), 4);
    assert_eq!(counters.tokens_created_for("c-1"), 3);
    assert_eq!(counters.rejections.conflict, 1);
}

#[tokio::test]
async fn duplicate_sessions_are_created_when_conflicts_are_off() {
    let sim = Sim::start().await;
    sim.sim.update_settings(|s| s.conflict_on_active = false);
    for _ in 0..2 {
        assert_eq!(
            sim.token(json!({"clientId": "c-1"})).await.status,
            StatusCode::CREATED
        );
    }
    let patch = sim
        .control(
            Method::PATCH,
            "/__sim/settings",
            json!({"conflict_on_active": true}),
        )
        .await;
    assert_eq!(patch.json()["conflict_on_active"], true);
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn hourly_limit_answers_too_many_requests_until_the_next_hour() {
    let sim = Sim::with(SimulatorConfig {
        hourly_limit: 2,
        ..SimulatorConfig::default()
    })
    .await;
    for i in 0..2 {
        assert_eq!(
            sim.token(json!({"clientId": format!("c-{i}")}))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let limited = sim.token(json!({"clientId": "c-9"})).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(identifier(&limited), "TOO_MANY_REQUESTS");

    sim.sim.update_settings(|s| s.legacy_rate_limit = true);
    let legacy = sim.token(json!({"clientId": "c-9"})).await;
    assert_eq!(
        (legacy.status, identifier(&legacy)),
        (StatusCode::BAD_REQUEST, json!("TOO_MANY_REQUESTS"))
    );

    sim.sim.advance(Duration::from_secs(3600));
    assert_eq!(
        sim.token(json!({"clientId": "c-9"})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(sim.sim.counters().rejections.rate_limited, 2);
}

#[tokio::test]
async fn takes_idenfy_down_and_up_at_run_time() {
    let sim = Sim::start().await;
    sim.sim
        .set_faults(Faults {
            retry_after: Some(7),
            ..Faults::down(503)
        })
        .unwrap();
    let down = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.header("retry-after"), "7");
    sim.sim.clear_faults();
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );

    // The same through the control API, with iDenfy's own 500 body and no Retry-After.
    let put = sim
        .control(
            Method::PUT,
            "/__sim/faults",
            json!({"status": 500, "rate": 1.0}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let error = sim.post("/api/v2/status", json!({"scanRef": "x"})).await;
    assert_eq!(
        (error.status, identifier(&error)),
        (StatusCode::INTERNAL_SERVER_ERROR, json!("INTERNAL_ERROR"))
    );
    assert_eq!(error.header("retry-after"), "");
    assert_eq!(
        sim.control(Method::POST, "/__sim/up", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    let up = sim.post("/api/v2/status", json!({"scanRef": "x"})).await;
    assert_eq!(up.status, StatusCode::NOT_FOUND);
    assert_eq!(sim.sim.counters().rejections.faults, 2);
}

#[tokio::test]
async fn next_n_faults_then_normal_service() {
    let sim = Sim::start().await;
    let put = sim
        .control(
            Method::PUT,
            "/__sim/faults",
            json!({"status": 429, "next": 2}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    for _ in 0..2 {
        let reply = sim.token(json!({"clientId": "c-1"})).await;
        assert_eq!(
            (reply.status, identifier(&reply)),
            (StatusCode::TOO_MANY_REQUESTS, json!("TOO_MANY_REQUESTS"))
        );
    }
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );
    let counters = sim.sim.counters();
    assert_eq!(
        counters.token_requests_for("c-1"),
        3,
        "faulted requests were received"
    );
    assert_eq!(counters.tokens_created_for("c-1"), 1);
}

#[tokio::test]
async fn gateway_errors_look_like_a_load_balancer() {
    let sim = Sim::start().await;
    let down = sim
        .control(Method::POST, "/__sim/down", json!({"status": 502}))
        .await;
    assert_eq!(down.status, StatusCode::OK);
    let reply = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("content-type"), "text/html");
}

#[tokio::test]
async fn drops_connections_without_answering() {
    let sim = Sim::start().await;
    sim.sim
        .set_faults(Faults {
            drop_next: 1,
            ..Faults::default()
        })
        .unwrap();
    let req = http::Request::post(sim.url(TOKEN))
        .header("authorization", &sim.auth)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            r#"{"clientId":"c-1"}"#,
        )))
        .unwrap();
    assert!(sim.client.send(req).await.is_err(), "no answer");
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );
    let counters = sim.sim.counters();
    assert_eq!(counters.rejections.dropped, 1);
    assert_eq!(counters.token_requests_for("c-1"), 2);
}

#[tokio::test]
async fn adds_latency_before_answering() {
    let sim = Sim::start().await;
    sim.sim
        .set_faults(Faults {
            latency_ms: 50,
            ..Faults::default()
        })
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );
    // A lower bound only: a sleep never ends early, so this cannot flake.
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(sim
        .sim
        .set_faults(Faults {
            rate: 1.5,
            ..Faults::default()
        })
        .is_err());
}

#[tokio::test]
async fn status_data_and_delete_follow_the_session() {
    let sim = Sim::start().await;
    let created = sim
        .token(json!({"clientId": "c-1", "firstName": "Ona", "expiryTime": 60}))
        .await
        .json();
    let scan_ref = created["scanRef"].clone();
    let status = sim
        .post("/api/v2/status", json!({"scanRef": scan_ref}))
        .await;
    assert_eq!(
        (status.status, status.json()["status"].clone()),
        (StatusCode::OK, json!("ACTIVE"))
    );
    assert_eq!(status.json()["clientId"], "c-1");

    let refused = sim
        .post("/api/v2/delete", json!({"scanRef": scan_ref}))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json(),
        json!({"message": "Token has not expired yet.", "identifier": "PARTNER_ERROR", "documentation": "", "severity": "NOT_SEVERE"})
    );

    sim.sim
        .finish(scan_ref.as_str().unwrap(), Finish::new("APPROVED"))
        .await
        .unwrap();
    let data = sim
        .post("/api/v2/data", json!({"scanRef": scan_ref}))
        .await
        .json();
    assert_eq!(data["docFirstName"], "ONA");
    sim.sim.advance(Duration::from_secs(60));
    let deleted = sim
        .post("/api/v2/delete", json!({"scanRef": scan_ref}))
        .await;
    assert_eq!((deleted.status, deleted.body.len()), (StatusCode::OK, 0));
    let status = sim
        .post("/api/v2/status", json!({"scanRef": scan_ref}))
        .await
        .json();
    assert_eq!(status["status"], "DELETED");

    let unknown = sim
        .post("/api/v2/status", json!({"scanRef": "no-such-ref"}))
        .await;
    assert_eq!(
        (unknown.status, identifier(&unknown)),
        (StatusCode::NOT_FOUND, json!("NOT_FOUND"))
    );
    let missing = sim.post("/api/v2/data", json!({})).await;
    assert_eq!(
        (missing.status, identifier(&missing)),
        (StatusCode::BAD_REQUEST, json!("MISSING_VALUE"))
    );
}

#[tokio::test]
async fn creates_kyb_tokens() {
    let sim = Sim::start().await;
    let reply = sim
        .post(
            "/kyb/tokens/",
            json!({"clientId": "company-1", "tags": ["a"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let body = reply.json();
    assert_eq!(body["tokenString"].as_str().unwrap().len(), 40);
    assert!(body["expiration"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        (body["isActive"].clone(), body["isValid"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        (body["clientId"].clone(), body["tokenType"].clone()),
        (json!("company-1"), json!("FORM"))
    );
    let counters = sim.sim.counters();
    assert_eq!(counters.kyb_tokens_created.get("company-1"), Some(&1));
    assert_eq!(counters.kyb_token_requests.get("company-1"), Some(&1));
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_refused() {
    let sim = Sim::start().await;
    let missing = sim.post("/api/v2/nothing", json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let get = sim
        .client
        .call(Method::GET, &sim.url(TOKEN), Some(&sim.auth), "")
        .await;
    assert_eq!(
        (get.status, identifier(&get)),
        (StatusCode::METHOD_NOT_ALLOWED, json!("METHOD_NOT_ALLOWED"))
    );
    assert_eq!(sim.sim.counters().requests_to("other"), 1);
}

#[tokio::test]
async fn sends_a_signed_webhook_when_a_session_finishes() {
    let receiver = MockUpstream::start().await;
    let sim = Sim::with(SimulatorConfig {
        webhook_url: Some(format!("{}/idenfy", receiver.url())),
        webhook_key: Some("hook-key".into()),
        ..SimulatorConfig::default()
    })
    .await;
    let created = sim
        .token(json!({"clientId": "c-1", "externalRef": "order-7"}))
        .await
        .json();
    let scan_ref = created["scanRef"].as_str().unwrap();

    let path = format!("/__sim/sessions/{scan_ref}/finish");
    let report = sim
        .control(Method::POST, &path, json!({"status": "DENIED"}))
        .await;
    assert_eq!(report.status, StatusCode::OK);
    assert_eq!(report.json()["webhook"]["delivered"], true);

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let hook = &received[0];
    assert_eq!(
        (hook.method.clone(), hook.uri.as_str()),
        (Method::POST, "/idenfy")
    );
    let signature = hook.headers["idenfy-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-key").unwrap();
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(signature).unwrap())
        .expect("signature verifies");
    assert_eq!(signature, signature.to_lowercase());
    assert_eq!(
        hook.headers["idenfy-event-type"],
        "IDENTIFICATION_MANUAL_FINISHED"
    );
    let payload: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(payload["status"]["overall"], "DENIED");
    assert_eq!(
        (payload["scanRef"].as_str(), payload["clientId"].as_str()),
        (Some(scan_ref), Some("c-1"))
    );
    assert_eq!(
        (payload["externalRef"].clone(), payload["final"].clone()),
        (json!("order-7"), json!(true))
    );

    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED,
        "no longer active"
    );
    assert_eq!(sim.sim.counters().webhooks.delivered, 1);
}

#[tokio::test]
async fn webhook_is_unsigned_without_a_key_and_retried_once() {
    let receiver = MockUpstream::start().await;
    receiver.push(Reply::json(500, "{}"));
    let sim = Sim::start().await;
    sim.sim.update_settings(|s| s.webhook_retry_delay_ms = 0);
    let scan_ref = sim.token(json!({"clientId": "c-1"})).await.json()["scanRef"]
        .as_str()
        .unwrap()
        .to_owned();
    let finish = Finish {
        url: Some(format!("{}/hook", receiver.url())),
        ..Finish::new("APPROVED")
    };
    let report = sim.sim.finish(&scan_ref, finish).await.unwrap();
    let delivery = report.webhook.unwrap();
    let statuses: Vec<_> = delivery.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(200)]);
    assert!(delivery.delivered);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert!(received
        .iter()
        .all(|r| !r.headers.contains_key("idenfy-signature")));
    assert_eq!(received[0].body, received[1].body);
}

#[tokio::test]
async fn finishing_needs_a_known_session_and_status() {
    let sim = Sim::start().await;
    let unknown = sim
        .control(
            Method::POST,
            "/__sim/sessions/nope/finish",
            json!({"status": "APPROVED"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let scan_ref = sim.token(json!({"clientId": "c-1"})).await.json()["scanRef"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/__sim/sessions/{scan_ref}/finish");
    let bad = sim
        .control(Method::POST, &path, json!({"status": "GREAT"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let ok = sim
        .control(Method::POST, &path, json!({"status": "APPROVED"}))
        .await;
    assert_eq!(
        (ok.status, ok.json()["webhook"].clone()),
        (StatusCode::OK, Value::Null)
    );
}

#[tokio::test]
async fn counts_what_it_saw_and_which_credentials() {
    let sim = Sim::start().await;
    sim.sim.update_settings(|s| {
        s.credentials.push(Credentials {
            api_key: "second-key".into(),
            api_secret: "second-secret".into(),
        })
    });
    let url = sim.url(TOKEN);
    let old = basic(DEFAULT_API_KEY, DEFAULT_API_SECRET);
    let new = basic("second-key", "second-secret");
    for (i, auth) in [&old, &new, &new].into_iter().enumerate() {
        let body = json!({ "clientId": format!("c-{i}") });
        let reply = sim.client.post_json(&url, Some(auth), &body).await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let counters = sim.sim.counters();
    assert!(counters.saw_authorization(&old) && counters.saw_authorization(&new));
    let seen: Vec<_> = counters.authorizations.iter().map(|a| a.count).collect();
    assert_eq!(seen, [1, 2]);
    assert_eq!(counters.last_authorization.as_deref(), Some(new.as_str()));

    let over_http: idenfy_gateway::simulator::Counters = serde_json::from_slice(
        &sim.control(Method::GET, "/__sim/counters", Value::Null)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(over_http, counters);
    let settings = sim
        .control(Method::GET, "/__sim/settings", Value::Null)
        .await;
    assert!(!String::from_utf8_lossy(&settings.body).contains("second-secret"));
}

#[tokio::test]
async fn reset_forgets_counters_sessions_and_faults() {
    let sim = Sim::start().await;
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED
    );
    sim.sim
        .set_faults(Faults {
            next: 5,
            ..Faults::default()
        })
        .unwrap();
    assert_eq!(
        sim.control(Method::POST, "/__sim/reset", Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.sim.counters(), Default::default());
    assert_eq!(sim.sim.faults(), Faults::default());
    assert_eq!(
        sim.token(json!({"clientId": "c-1"})).await.status,
        StatusCode::CREATED,
        "session forgotten"
    );
}

#[tokio::test]
async fn clock_advances_through_the_control_api() {
    let sim = Sim::start().await;
    let scan_ref = sim
        .token(json!({"clientId": "c-1", "expiryTime": 60}))
        .await
        .json()["scanRef"]
        .clone();
    let advanced = sim
        .control(Method::POST, "/__sim/clock/advance", json!({"seconds": 61}))
        .await;
    assert_eq!(advanced.status, StatusCode::OK);
    let status = sim
        .post("/api/v2/status", json!({"scanRef": scan_ref}))
        .await
        .json();
    assert_eq!(status["status"], "EXPIRED");
}

#[tokio::test]
async fn serves_h2c_and_shuts_down() {
    let sim = Sim::start().await;
    let h2 = Client::h2c();
    let reply = h2
        .post_json(
            &sim.url(TOKEN),
            Some(&sim.auth),
            &json!({"clientId": "c-1"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let url = sim.url(TOKEN);
    sim.sim.shutdown().await;
    let req = http::Request::post(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert!(
        Client::default().send(req).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn an_error_after_the_effect_leaves_a_billed_session_behind() {
    let sim = Sim::start().await;
    let put = sim
        .control(
            Method::PUT,
            "/__sim/faults",
            json!({"status": 503, "next": 1, "after_effect": 1.0}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let lost = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(lost.status, StatusCode::SERVICE_UNAVAILABLE);
    let counters = sim.sim.counters();
    assert_eq!(counters.tokens_created_for("c-1"), 1, "the session exists");
    assert_eq!(counters.rejections.faults, 1);
    assert_eq!(counters.rejections.faults_after_effect, 1);
    // The caller's retry meets the session it never saw.
    let retry = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    sim.sim.update_settings(|s| s.conflict_on_active = false);
    let again = sim.token(json!({"clientId": "c-1"})).await;
    assert_eq!(again.status, StatusCode::CREATED);
    let counters = sim.sim.counters();
    assert_eq!(
        (counters.sessions_created(), counters.duplicate_sessions()),
        (2, 1)
    );
}
