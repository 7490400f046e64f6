//! The webhook keys of the config (issue 14): what loads, and every mistake named by its key.

use std::time::Duration;

use idenfy_gateway::config::{Config, UnknownScanRef};

fn env(name: &str) -> Option<String> {
    Some(format!("value-of-{name}"))
}

const BASE: &str = r#"
[listen]
webhook = "127.0.0.1:0"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
webhook_key = "account-key"
[[team]]
name = "payments"
token = "t1"
webhook_url = "https://payments.internal/hook"
webhook_key = "team-key"
[[team]]
name = "growth"
token = "t2"
"#;

#[test]
fn webhook_keys_load_with_their_defaults() {
    let config = Config::parse(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen.webhook, Some("127.0.0.1:0".parse().unwrap()));
    assert!(config.accounts[0].webhook_key.is_some());
    let hook = config.teams[0].webhook.as_ref().unwrap();
    assert_eq!(hook.url, "https://payments.internal/hook");
    assert!(config.teams[1].webhook.is_none());
    let w = &config.webhooks;
    assert_eq!(w.dir, std::path::Path::new("/var/lib/idenfy-gateway"));
    assert_eq!(
        (w.retry_base, w.retry_cap, w.max_age),
        (
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(72 * 3600)
        )
    );
    assert_eq!(w.unknown, UnknownScanRef::Dead);
    assert_eq!(config.dedup.recheck_after, Duration::from_secs(60));
    let team = format!("{BASE}[webhooks]\nunknown = \"growth\"\n[dedup]\nrecheck_after = \"0s\"\n");
    let config = Config::parse(&team, &env).unwrap();
    assert_eq!(config.webhooks.unknown, UnknownScanRef::Team(1));
    assert_eq!(config.dedup.recheck_after, Duration::ZERO);
}

#[test]
fn the_shared_gateway_example_opens_the_webhook_listener() {
    let text = std::fs::read_to_string("config/shared-gateway.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["idenfy", "idenfy-kyb"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("api-key"), "k\n").unwrap();
        std::fs::write(dir.path().join(sub).join("api-secret"), "s\n").unwrap();
    }
    let text = text.replace("/run/secrets", dir.path().to_str().unwrap());
    let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.listen.webhook.is_some());
    assert!(config.accounts[0].webhook_key.is_some());
    assert!(config.teams[0].webhook.is_some());
}

#[test]
fn every_webhook_mistake_is_named_by_its_key() {
    let text = BASE
        .replace("webhook = \"127.0.0.1:0\"", "webhook = \"anywhere\"")
        .replace("webhook_key = \"team-key\"", "")
        .replace(
            "token = \"t2\"",
            "token = \"t2\"\nwebhook_url = \"ftp://x\"\nwebhook_key = \"k\"",
        )
        + "[webhooks]\nunknown = \"nobody\"\nretry_base = \"10m\"\nretry_cap = \"1m\"\nmax_age = \"0s\"\n\
           [dedup]\nrecheck_after = \"31d\"\n";
    let errors = Config::parse(&text, &env).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "listen.webhook",
        "team[0].webhook_key",
        "team[1].webhook_url",
        "webhooks.unknown",
        "webhooks.retry_base",
        "webhooks.max_age",
        "dedup.recheck_after",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

/// `BASE` with `lines` added to `[listen]` (and `listen.webhook` left out when `!webhook`).
fn with_listen(lines: &str, webhook: bool) -> String {
    let base = match webhook {
        true => BASE.to_owned(),
        false => BASE.replace("webhook = \"127.0.0.1:0\"\n", ""),
    };
    base.replace("[listen]\n", &format!("[listen]\n{lines}"))
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The problems of `text`, as (key, kind).
fn problems(text: &str) -> Vec<(String, idenfy_gateway::config::ProblemKind)> {
    let errors = Config::parse(text, &env).unwrap_err();
    errors.0.into_iter().map(|e| (e.path, e.kind)).collect()
}

#[test]
fn the_webhook_listener_takes_tls_files_and_names_every_mistake_by_its_key() {
    use idenfy_gateway::config::ProblemKind::{Environment, File};
    let (cert, key, ca) = (
        fixture("localhost.pem"),
        fixture("localhost.key"),
        fixture("client-ca.pem"),
    );
    let both = format!(
        "webhook_tls_cert_file = \"{cert}\"\nwebhook_tls_key_file = \"{key}\"\n\
         webhook_tls_client_ca_file = \"{ca}\"\n"
    );
    let config = Config::parse(&with_listen(&both, true), &env).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.listen.webhook_tls.expect("webhook TLS");
    assert_eq!(tls.cert_file, std::path::Path::new(&cert));
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(std::path::Path::new(&ca))
    );
    assert_eq!(
        config.listen.tls, None,
        "the proxy listener's TLS is its own"
    );

    let cert_only = format!("webhook_tls_cert_file = \"{cert}\"\n");
    assert_eq!(
        problems(&with_listen(&cert_only, true)),
        [("listen.webhook_tls_key_file".into(), File)]
    );
    let ca_only = format!("webhook_tls_client_ca_file = \"{ca}\"\n");
    assert_eq!(
        problems(&with_listen(&ca_only, true)),
        [("listen.webhook_tls_client_ca_file".into(), File)]
    );
    assert_eq!(
        problems(&with_listen(&both, false)),
        [("listen.webhook_tls_cert_file".into(), File)]
    );
    let missing = both.replace("localhost.key", "no-such.key");
    assert_eq!(
        problems(&with_listen(&missing, true)),
        [("listen.webhook_tls_cert_file".into(), Environment)]
    );
    let missing_ca = both.replace("client-ca.pem", "no-such-ca.pem");
    assert_eq!(
        problems(&with_listen(&missing_ca, true)),
        [("listen.webhook_tls_client_ca_file".into(), Environment)]
    );
}
