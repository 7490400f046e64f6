//! The alerts (`deploy/prometheus`) and the Grafana dashboard (`deploy/grafana`): promtool
//! checks and unit-tests the rules, the PrometheusRule is the rule file, the dashboard is a
//! well-formed Grafana dashboard whose queries parse, and every metric either of them uses is
//! one the gateway exports: a real gateway, run with the config of the shared gateway with its
//! webhook listener (`components/webhook-ingress/config.toml`, base's plus webhooks) in fleet
//! mode on a `redis-server` of the test's own, in front of the simulator, is sent traffic and
//! webhooks, and scraped.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use http::{Method, StatusCode};
use idenfy_gateway::simulator::{
    Finish, Simulator, SimulatorConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET,
};
use idenfy_gateway::webhooks::sign;
use serde_json::Value as Json;
use support::deploy::{at, deploy_dir, list_at, metric_names, run, str_at, tool, yaml_file};
use support::gateway::send;
use support::http::basic;
use support::process::GatewayProcess;
use support::redis_server::RedisServer;
use support::upstream::{MockUpstream, Reply};

/// The signing key of account `main`'s webhooks, as set in iDenfy's dashboard.
const ACCOUNT_HOOK_KEY: &str = "account-main-hook-key";

/// Series that appear only once something happened; the scrape waits for all of them.
const AFTER_TRAFFIC: &[&str] = &[
    "idenfy_gateway_credential_reloads_total{",
    "idenfy_gateway_webhooks_received_total{",
    "idenfy_gateway_webhooks_duplicates_total{",
    "idenfy_gateway_webhooks_refused_total{",
    "idenfy_gateway_webhooks_delivered_total{",
    "idenfy_gateway_webhooks_retries_total{",
    "idenfy_gateway_webhooks_dead_total{",
];

/// Metrics the alerts use that other exporters provide: Prometheus itself (`up`) and
/// kube-state-metrics (readiness; the gateway's `/readyz` is a probe, not a metric).
const EXTERNAL_METRICS: &[&str] = &[
    "up",
    "kube_pod_container_status_ready",
    "kube_pod_init_container_status_ready",
];

fn rules_file() -> PathBuf {
    deploy_dir().join("prometheus/idenfy-gateway.rules.yml")
}

fn dashboard_file() -> PathBuf {
    deploy_dir().join("grafana/idenfy-gateway.json")
}

fn dashboard() -> Json {
    serde_json::from_str(&std::fs::read_to_string(dashboard_file()).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard, with its variables replaced by values that
/// Prometheus accepts.
fn dashboard_queries() -> Vec<String> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*")
                    .replace("$team", ".*")
                    .replace("$account", ".*"),
            );
        }
    }
    queries
}

/// Runs `promtool ARGS`, asserting it succeeds; returns what it printed.
fn promtool(promtool: &Path, args: &[&str], file: &Path) -> String {
    let out = run(Command::new(promtool).args(args).arg(file));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} {}:\n{text}",
        file.display()
    );
    text
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let checked = promtool(&promtool_bin, &["check", "rules"], &rules_file());
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tests = deploy_dir().join("prometheus/idenfy-gateway.rules.test.yml");
    let tested = promtool(&promtool_bin, &["test", "rules"], &tests);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Each alert has a summary, a description, a runbook section in docs/operations.md, and a
/// promtool test that fires it and one moment or series where it does not.
#[test]
fn every_alert_is_documented_and_tested() {
    let rules = yaml_file(&rules_file());
    let tests =
        std::fs::read_to_string(deploy_dir().join("prometheus/idenfy-gateway.rules.test.yml"))
            .unwrap();
    let operations =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .unwrap();
    let mut alerts = 0;
    for group in list_at(&rules, "groups") {
        for rule in list_at(group, "rules") {
            let alert = str_at(rule, "alert");
            if alert.is_empty() {
                continue;
            }
            alerts += 1;
            for key in ["summary", "description"] {
                assert!(
                    !str_at(rule, &format!("annotations.{key}")).is_empty(),
                    "{alert}: {key}"
                );
            }
            let anchor = alert.to_lowercase();
            assert_eq!(
                str_at(rule, "annotations.runbook_url"),
                format!("docs/operations.md#{anchor}")
            );
            assert!(
                operations.contains(&format!("### {alert}\n")),
                "{alert}: no runbook section"
            );
            assert!(
                tests.contains(&format!("alertname: {alert}\n")),
                "{alert}: no promtool test"
            );
        }
    }
    assert!(alerts >= 9, "{alerts} alerts");
}

/// The Prometheus Operator's PrometheusRule holds exactly the rule file.
#[test]
fn prometheus_rule_is_the_rule_file() {
    let rule = yaml_file(&deploy_dir().join("kubernetes/components/alerts/prometheusrule.yaml"));
    assert_eq!(str_at(&rule, "kind"), "PrometheusRule");
    assert_eq!(
        at(&rule, "spec"),
        &yaml_file(&rules_file()),
        "components/alerts/prometheusrule.yaml differs from deploy/prometheus/idenfy-gateway.rules.yml"
    );
}

/// The dashboard as Grafana loads it: its schema fields, unique panel ids, panels on the 24-column
/// grid without overlapping, a Prometheus query with a unique refId in each target, and the
/// template variables for namespace, team and account.
#[test]
fn dashboard_is_a_well_formed_grafana_dashboard() {
    let dashboard = dashboard();
    for key in ["uid", "title"] {
        assert!(!dashboard[key].as_str().unwrap_or("").is_empty(), "{key}");
    }
    assert!(dashboard["schemaVersion"].as_u64() >= Some(36));
    assert!(dashboard["time"]["from"].is_string() && dashboard["time"]["to"].is_string());
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "team", "account"]);

    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        assert!(["timeseries", "stat"].contains(&panel["type"].as_str().unwrap()));
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {grid}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{title} overlaps another panel at {cell:?}"
            );
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: duplicate refId");
        assert!(targets
            .iter()
            .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())));
    }
}

/// Every query of the dashboard parses as PromQL (promtool checks it as a recording rule).
#[test]
fn dashboard_queries_parse() {
    let Some(promtool_bin) = tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<String> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, q)| {
            format!(
                "      - record: dashboard:query{i}\n        expr: {}\n",
                serde_json::to_string(q).unwrap()
            )
        })
        .collect();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(
        &file,
        format!(
            "groups:\n  - name: dashboard\n    rules:\n{}",
            rules.concat()
        ),
    )
    .unwrap();
    promtool(&promtool_bin, &["check", "rules"], &file);
}

/// Names followed by `{` in a PromQL text: the metric selectors that carry labels.
fn selectors(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices('{') {
        let head = &text[..i];
        let start = head.rfind(|c: char| !word(c)).map_or(0, |s| s + 1);
        if start < i && !head[start..].starts_with(|c: char| c.is_ascii_digit()) {
            names.insert(head[start..].to_owned());
        }
    }
    names
}

/// Sends what makes each family appear: tokens (a session, a replay), a clientId whose session
/// iDenfy already has (409), a rotated key file (a reload); webhooks through the real listener:
/// the simulator's signed webhook for the session (delivered to the team after one retry), one
/// for a scanRef no team created (dead letters) sent twice (a duplicate), one badly signed
/// (refused). Then scrapes, once every series of [`AFTER_TRAFFIC`] is there.
async fn scrape_after_traffic(
    gateway: &GatewayProcess,
    sim: &Simulator,
    secrets: &Path,
    team: &MockUpstream,
) -> String {
    let auth = ("authorization", "Bearer token-for-PAYMENTS_GATEWAY_TOKEN");
    let token = |client: &str| format!(r#"{{"clientId":"{client}"}}"#);
    let json = ("content-type", "application/json");
    let mut scan_ref = String::new();
    for expected in ["leader", "replayed"] {
        let res = send(
            Method::POST,
            &gateway.url("/api/v2/token"),
            &[auth, json],
            token("deploy-1"),
        )
        .await;
        assert!(res.status.is_success(), "{}", res.status);
        assert_eq!(res.header("x-gateway-dedup"), expected);
        scan_ref = res.json()["scanRef"].as_str().unwrap().to_owned();
    }
    let sim_auth = basic(DEFAULT_API_KEY, DEFAULT_API_SECRET);
    let direct = [("authorization", sim_auth.as_str()), json];
    let res = send(
        Method::POST,
        &format!("{}/api/v2/token", sim.url()),
        &direct,
        token("deploy-2"),
    )
    .await;
    assert!(res.status.is_success(), "{}", res.status);
    let res = send(
        Method::POST,
        &gateway.url("/api/v2/token"),
        &[auth, json],
        token("deploy-2"),
    )
    .await;
    assert_eq!(res.status, StatusCode::CONFLICT);

    // A new key for the account no request used: a reload is counted when the pair changes.
    std::fs::write(secrets.join("kyb/api-key"), "rotated-key\n").unwrap();

    // iDenfy (the simulator) finishes the session and posts its signed webhook to the listener;
    // the team's endpoint fails the first delivery (a retry), then takes it.
    let hook = format!(
        "http://{}/webhooks/idenfy/main",
        gateway
            .webhook
            .expect("the config opens the webhook listener")
    );
    team.push(Reply::json(503, r#"{"down":true}"#));
    sim.update_settings(|settings| {
        settings.webhook_url = Some(hook.clone());
        settings.webhook_key = Some(ACCOUNT_HOOK_KEY.into());
    });
    let report = sim
        .finish(&scan_ref, Finish::new("APPROVED"))
        .await
        .unwrap();
    assert!(
        report.webhook.unwrap().delivered,
        "the gateway acknowledged"
    );
    let stray =
        r#"{"final":true,"status":{"overall":"DENIED"},"scanRef":"not-from-here","clientId":"c"}"#;
    for (key, expected) in [
        (ACCOUNT_HOOK_KEY, StatusCode::OK),
        (ACCOUNT_HOOK_KEY, StatusCode::OK),
        ("not-the-key", StatusCode::UNAUTHORIZED),
    ] {
        let signature = sign(key.as_bytes(), stray.as_bytes());
        let headers = [
            json,
            ("idenfy-event-type", "IDENTIFICATION_MANUAL_FINISHED"),
            ("idenfy-signature", signature.as_str()),
        ];
        let res = send(Method::POST, &hook, &headers, stray).await;
        assert_eq!(res.status, expected);
    }
    tokio::time::timeout(std::time::Duration::from_secs(20), team.wait_for(2))
        .await
        .expect("the team's endpoint got the webhook and its retry within 20 s");

    let metrics_url = format!("http://{}/metrics", gateway.admin);
    let mut text = String::new();
    for _ in 0..200 {
        let scraped = send(Method::GET, &metrics_url, &[], "").await;
        text = String::from_utf8(scraped.body.to_vec()).unwrap();
        if AFTER_TRAFFIC.iter().all(|series| text.contains(series)) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let missing: Vec<&&str> = AFTER_TRAFFIC
        .iter()
        .filter(|s| !text.contains(**s))
        .collect();
    panic!("not counted within 10 s of the traffic: {missing:?}");
}

/// The names of the samples in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_alerts_and_the_dashboard_is_exported() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    for account in ["main", "kyb"] {
        std::fs::create_dir_all(secrets.join(account)).unwrap();
        std::fs::write(secrets.join(account).join("api-key"), DEFAULT_API_KEY).unwrap();
        std::fs::write(secrets.join(account).join("api-secret"), DEFAULT_API_SECRET).unwrap();
    }
    // Webhook keys: the account's, known to iDenfy, and each team's own.
    let hook_keys = dir.path().join("secrets-webhooks");
    std::fs::create_dir_all(&hook_keys).unwrap();
    std::fs::write(hook_keys.join("account-main"), ACCOUNT_HOOK_KEY).unwrap();
    for name in [
        "account-kyb",
        "team-payments",
        "team-onboarding",
        "team-business",
    ] {
        std::fs::write(hook_keys.join(name), format!("{name}-hook-key")).unwrap();
    }
    let queue = dir.path().join("webhooks");
    let team = MockUpstream::start().await;
    // The shared gateway's own config with webhooks, as deployed, on loopback, in front of the
    // simulator, delivering to a test endpoint, retrying within milliseconds.
    let deployed = "kubernetes/components/webhook-ingress/config.toml";
    let mut config = std::fs::read_to_string(deploy_dir().join(deployed))
        .unwrap()
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:9090", "127.0.0.1:0")
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("https://ivs.idenfy.com", &sim.url())
        .replace("/run/secrets/idenfy-webhooks", hook_keys.to_str().unwrap())
        .replace("/run/secrets/idenfy", secrets.to_str().unwrap())
        .replace("/var/lib/idenfy-gateway", queue.to_str().unwrap())
        .replace("retry_base = \"1s\"", "retry_base = \"10ms\"")
        .replace("retry_cap = \"5m\"", "retry_cap = \"50ms\"");
    // Fleet mode, as its comment in the file says, on a Redis of the test's own: the alerts'
    // Redis metrics exist only there (without redis-server: skipped with a notice, and excused).
    let redis = RedisServer::start();
    if let Some(redis) = &redis {
        let fleet = format!(
            "backend = \"redis\"\nredis_url = \"{}\"\ntimeout = \"500ms\"",
            redis.url()
        );
        let memory = "\nbackend = \"memory\"\n";
        assert!(config.contains(memory), "{deployed}: [state]");
        config = config.replace(memory, &format!("\n{fleet}\n"));
    }
    for name in ["payments", "onboarding", "business"] {
        let endpoint = format!("http://{name}-app.{name}.svc.cluster.local:8000");
        assert!(config.contains(&endpoint), "{deployed}: {endpoint}");
        config = config.replace(&endpoint, &team.url());
    }
    let file = dir.path().join("config.toml");
    std::fs::write(&file, config).unwrap();
    let tokens = ["PAYMENTS", "ONBOARDING", "BUSINESS"].map(|team| {
        (
            format!("{team}_GATEWAY_TOKEN"),
            format!("token-for-{team}_GATEWAY_TOKEN"),
        )
    });
    let envs: Vec<(&str, &str)> = tokens
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = GatewayProcess::start(&file, &envs);
    let scraped = exported(&scrape_after_traffic(&gateway, &sim, &secrets, &team).await);

    let rules_text = std::fs::read_to_string(rules_file()).unwrap();
    let dashboard_text = std::fs::read_to_string(dashboard_file()).unwrap();
    let recorded: BTreeSet<String> = list_at(&yaml_file(&rules_file()), "groups")
        .iter()
        .flat_map(|g| list_at(g, "rules"))
        .map(|r| str_at(r, "record").to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    let mut used = metric_names(&rules_text);
    used.extend(metric_names(&dashboard_text));
    assert!(used.len() >= 12, "{used:?}");
    for name in &used {
        if name.contains(':') {
            assert!(
                recorded.contains(name),
                "{name} is not a recording rule of the rule file"
            );
        } else if redis.is_some() || !name.starts_with("idenfy_gateway_state_") {
            assert!(
                scraped.contains(name),
                "{name} is used but the gateway does not export it; it exports {scraped:?}"
            );
        }
    }
    let mut others = selectors(&rules_text);
    others.extend(dashboard_queries().iter().flat_map(|q| selectors(q)));
    for name in others.iter().filter(|n| !n.starts_with("idenfy_gateway")) {
        assert!(
            EXTERNAL_METRICS.contains(&name.as_str()),
            "{name}: from which exporter?"
        );
    }
    gateway.terminate();
    let (code, _) = gateway.wait();
    assert_eq!(code, Some(0));
}
