//! The `[state]` keys of the config (issue 15): the Redis backend, its URL, password file,
//! prefix, timeout and fallback, and every mistake named by its key.

use std::time::Duration;

use idenfy_gateway::config::{show, Config, LoadOptions, OnUnavailable, State};

fn env(name: &str) -> Option<String> {
    match name {
        "REDIS_PASSWORD" => Some("hunter2".into()),
        _ => Some(format!("value-of-{name}")),
    }
}

const BASE: &str = r#"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
[[team]]
name = "payments"
"#;

fn with_state(state: &str) -> String {
    format!("{BASE}[state]\n{state}\n")
}

fn problems(state: &str) -> Vec<(String, String)> {
    let errors = Config::parse(&with_state(state), &env).unwrap_err();
    errors.0.into_iter().map(|e| (e.path, e.message)).collect()
}

#[test]
fn memory_is_the_default_backend() {
    let config = Config::parse(BASE, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.state, State::Memory);
}

#[test]
fn redis_loads_with_its_defaults() {
    let text = with_state("backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"");
    let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    let State::Redis(redis) = config.state else {
        panic!("expected the redis backend");
    };
    assert_eq!(redis.url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(redis.key_prefix, "idenfy-gateway:");
    assert_eq!(redis.timeout, Duration::from_millis(50));
    assert_eq!(redis.on_unavailable, OnUnavailable::Local);
    assert_eq!(redis.password_file, None);
}

#[test]
fn redis_takes_every_key_and_expands_variables_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let text = with_state(&format!(
        "backend = \"redis\"\nredis_url = \"rediss://gateway:${{REDIS_PASSWORD}}@redis.internal:6380\"\n\
         redis_password_file = {:?}\nkey_prefix = \"prod:\"\ntimeout = \"20ms\"\n\
         on_unavailable = \"refuse\"",
        file.to_str().unwrap()
    ));
    let config = Config::parse(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    let State::Redis(redis) = config.state else {
        panic!("expected the redis backend");
    };
    assert_eq!(
        redis.url.expose(),
        "rediss://gateway:hunter2@redis.internal:6380"
    );
    assert_eq!(redis.password_file.as_deref(), Some(file.as_path()));
    assert_eq!(redis.key_prefix, "prod:");
    assert_eq!(redis.timeout, Duration::from_millis(20));
    assert_eq!(redis.on_unavailable, OnUnavailable::Refuse);
}

#[test]
fn every_wrong_state_key_is_named() {
    let found = problems(
        "backend = \"etcd\"\nkey_prefix = \"{x}\"\ntimeout = \"0s\"\non_unavailable = \"wait\"",
    );
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "state.backend",
            "state.key_prefix",
            "state.timeout",
            "state.on_unavailable"
        ]
    );
    assert!(found[0].1.contains("\"memory\" or \"redis\""), "{found:?}");
    assert!(found[3].1.contains("\"local\" or \"refuse\""), "{found:?}");
}

#[test]
fn redis_needs_a_redis_url() {
    let found = problems("backend = \"redis\"");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "state.redis_url");
    assert!(found[0].1.contains("missing"), "{found:?}");
    for url in ["http://redis:6379", "redis://", "redis://host:notaport"] {
        let found = problems(&format!("backend = \"redis\"\nredis_url = {url:?}"));
        assert_eq!(found.len(), 1, "{url}: {found:?}");
        assert_eq!(found[0].0, "state.redis_url", "{url}");
    }
}

#[test]
fn a_missing_password_file_is_a_problem_of_this_machine() {
    let text = with_state(
        "backend = \"redis\"\nredis_url = \"redis://r:6379\"\nredis_password_file = \"/nonexistent/pw\"",
    );
    let errors = Config::parse(&text, &env).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "state.redis_password_file");
    assert!(errors.environment_only());
    let offline = LoadOptions { offline: true };
    assert!(Config::parse_with(&text, &env, offline).is_ok());
}

#[test]
fn a_redis_ca_file_must_be_a_readable_pem_and_needs_rediss() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let ca = format!(
        "{}/tests/fixtures/localhost.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let state = |url: &str, file: &str| {
        format!("backend = \"redis\"\nredis_url = \"{url}\"\nredis_ca_file = {file:?}")
    };
    let ok = Config::parse(&with_state(&state("rediss://r:6380", &ca)), &env).unwrap();
    let State::Redis(redis) = &ok.state else {
        panic!("redis expected");
    };
    assert_eq!(redis.ca_file.as_deref(), Some(std::path::Path::new(&ca)));
    for (url, file, message) in [
        ("rediss://r:6380", "/nonexistent/ca.pem", "cannot read"),
        (
            "rediss://r:6380",
            not_pem.to_str().unwrap(),
            "no PEM certificate",
        ),
        ("redis://r:6379", ca.as_str(), "only with a rediss:// URL"),
    ] {
        let problems = problems(&state(url, file));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "state.redis_ca_file");
        assert!(problems[0].1.contains(message), "{problems:?}");
    }
}

#[test]
fn config_show_redacts_the_redis_password() {
    let text = with_state(
        "backend = \"redis\"\nredis_url = \"redis://gateway:${REDIS_PASSWORD}@redis:6379/0\"",
    );
    let shown = show(&text, &env, LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("redis://gateway:[redacted]@redis:6379/0"),
        "{shown}"
    );
    assert!(
        shown.contains("key_prefix = \"idenfy-gateway:\""),
        "{shown}"
    );
    assert!(shown.contains("on_unavailable = \"local\""), "{shown}");
}
