//! Every example in `config/` loads.

use idenfy_gateway::config::{Config, State};

fn env(name: &str) -> Option<String> {
    Some(format!("value-of-{name}"))
}

#[test]
fn sidecar_example_loads() {
    let text = std::fs::read_to_string("config/sidecar.toml").unwrap();
    let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.teams.len(), 1);
    assert!(!config.teams[0].authenticates());
    assert!(config.listen.proxy.ip().is_loopback());
    // Probes and scrapes reach the admin listener on the pod IP (the file says why).
    assert!(config.listen.admin.ip().is_unspecified());
    assert_eq!(config.state, State::Memory);
}

#[test]
fn shared_gateway_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["idenfy", "idenfy-kyb"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("api-key"), "k\n").unwrap();
        std::fs::write(dir.path().join(sub).join("api-secret"), "s\n").unwrap();
    }
    let text = std::fs::read_to_string("config/shared-gateway.toml")
        .unwrap()
        .replace("/run/secrets", dir.path().to_str().unwrap());
    let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.accounts.len(), 2);
    assert_eq!(config.teams.len(), 3);
    assert_eq!(config.teams[2].account, 1);
    assert!(config.teams.iter().all(|t| t.authenticates()));
    let State::Redis(redis) = &config.state else {
        panic!("the shared gateway's example uses fleet mode");
    };
    assert_eq!(
        redis.url.expose(),
        "redis://gateway:value-of-REDIS_PASSWORD@idenfy-gateway-redis:6379/0"
    );
}

#[test]
fn a_tokenless_team_is_refused_on_a_public_listener_unless_allowed() {
    let text = std::fs::read_to_string("config/sidecar.toml")
        .unwrap()
        .replace("127.0.0.1:8080", "0.0.0.0:8080");
    let errors = Config::parse(&text, &env).unwrap_err();
    assert_eq!(errors.0[0].path, "team[0].token");
    let allowed = text.replace("[listen]\n", "[listen]\nallow_unauthenticated = true\n");
    assert!(Config::parse(&allowed, &env).is_ok());
}

#[test]
fn reports_every_problem_with_its_key_path() {
    let text = r#"
[listen]
proxy = "nowhere"
[upstream]
url = "ftp://x"
[[account]]
name = "main"
api_key = "k"
[[team]]
name = "a"
account = "missing"
burst = 0
[[team]]
name = "b"
[[team]]
name = "c"
"#;
    let errors = Config::parse(text, &env).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "listen.proxy",
        "upstream.url",
        "account[0].api_secret",
        "team[0].account",
        "team[0].burst",
        "team[1].token",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn demo_example_loads() {
    let addr = "127.0.0.1:0".parse().unwrap();
    let config = idenfy_gateway::demo::demo_config(addr, addr, "http://127.0.0.1:1").unwrap();
    assert!(!config.teams[0].authenticates());
    assert!(config.dedup.replay);
}
