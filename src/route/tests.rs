//! Tests of route classification: tables of spellings and what each becomes.

use super::*;
use crate::config::DEFAULT_PREFIXES;

fn routes() -> Routes {
    Routes::new(
        &DEFAULT_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
}

#[test]
fn classifies_token_routes_by_method_and_path() {
    let r = routes();
    assert_eq!(
        r.classify(&Method::POST, "/api/v2/token").unwrap().kind,
        RouteKind::KycToken
    );
    assert_eq!(
        r.classify(&Method::POST, "/kyb/tokens/").unwrap().kind,
        RouteKind::KybToken
    );
    assert_eq!(
        r.classify(&Method::GET, "/api/v2/token").unwrap().kind,
        RouteKind::Other
    );
    let status = r.classify(&Method::POST, "/api/v2/status").unwrap();
    assert_eq!(
        (status.kind, status.label),
        (RouteKind::Other, "/api/v2/status")
    );
}

#[test]
fn finds_token_in_any_case_and_only_there() {
    for path in [
        "/api/v2/token",
        "/API/V2/TOKEN",
        "/kyb/Tokens/",
        "/x/tOkEn.json",
    ] {
        assert!(mentions_token(path.as_bytes()), "{path}");
    }
    for path in ["/api/v2/status", "/api/v2/toke", "/api/v2/to-ken", "", "/t"] {
        assert!(!mentions_token(path.as_bytes()), "{path}");
    }
}

#[test]
fn refuses_methods_idenfy_has_no_route_for() {
    let r = routes();
    for method in ["CONNECT", "TRACE", "PROPFIND", "BREW"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert!(
            matches!(
                r.classify(&method, "/api/v2/status"),
                Err(GatewayError::MethodNotAllowed)
            ),
            "{method}"
        );
    }
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        assert!(r.classify(&method, "/api/v2/status").is_ok(), "{method}");
    }
}

#[test]
fn labels_unknown_endpoints_by_prefix() {
    let r = routes();
    assert_eq!(
        r.classify(&Method::GET, "/aml/checks/123/").unwrap().label,
        "/aml/*"
    );
    assert_eq!(
        r.classify(&Method::GET, "/api/v2/something").unwrap().label,
        "/api/v2/*"
    );
}

#[test]
fn refuses_paths_outside_the_allow_list() {
    let r = routes();
    for path in ["/", "/admin", "/metrics", "/api/v1/token", "/apix/v2/"] {
        assert!(
            matches!(
                r.classify(&Method::GET, path),
                Err(GatewayError::RouteNotFound)
            ),
            "{path}"
        );
    }
}

#[test]
fn lists_every_label_once() {
    let r = routes();
    let labels = r.labels();
    for label in KNOWN {
        assert_eq!(labels.iter().filter(|l| *l == label).count(), 1, "{label}");
    }
    assert!(labels.contains(&"/aml/*"));
    let other = r.classify(&Method::GET, "/aml/x").unwrap().label;
    assert!(labels.contains(&other));
}

/// The kind of the route, or the `x-gateway-error` reason of the refusal.
fn outcome(method: &str, path: &str) -> Result<RouteKind, &'static str> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    routes()
        .classify(&method, path)
        .map(|r| r.kind)
        .map_err(|e| e.reason())
}

#[test]
fn token_endpoints_are_recognised_only_in_their_documented_spelling() {
    use RouteKind::{KybToken, KycToken, Other};
    let bad = Err("bad_path");
    for (method, path, expected) in [
        ("POST", "/api/v2/token", Ok(KycToken)),
        ("POST", "/kyb/tokens/", Ok(KybToken)),
        ("GET", "/api/v2/token", Ok(Other)),
        ("POST", "/api/v2/token/", bad),
        ("POST", "/api/v2/token//", bad),
        ("POST", "/api/v2//token", bad),
        ("POST", "/api/v2/token;", bad),
        ("POST", "/api/v2/token;x=1", bad),
        ("POST", "/api/v2/token%3B", bad),
        ("POST", "/api/v2/token%3bx", bad),
        ("POST", "/api/v2/%74oken", bad),
        ("POST", "/api/v2/%74%6F%6B%65%6E", bad),
        ("POST", "/%61pi/v2/token", bad),
        ("POST", "/api/v2/Token", bad),
        ("POST", "/API/V2/TOKEN", bad),
        ("POST", "/api/v2/token.json", bad),
        ("POST", "/kyb/tokens", bad),
        ("POST", "/kyb/tokens//", bad),
        ("POST", "/kyb//tokens/", bad),
        ("POST", "/kyb/tokens;/", bad),
        ("POST", "/kyb/%74okens/", bad),
        ("POST", "/KYB/Tokens/", bad),
        ("POST", "/kyb/tokens.json/", bad),
        ("GET", "/api/v2/token/", bad),
        ("PUT", "/kyb/tokens", bad),
        ("post", "/api/v2/token", Err("route_not_found")),
        ("Post", "/kyb/tokens/", Err("route_not_found")),
    ] {
        assert_eq!(outcome(method, path), expected, "{method} {path}");
    }
}

#[test]
fn paths_near_a_token_endpoint_are_other_routes() {
    for (method, path) in [
        ("PATCH", "/kyb/tokens/abc123/"),
        ("POST", "/kyb/tokens/abc123/"),
        ("POST", "/api/v2/tokens"),
        ("POST", "/api/v2/token-status"),
        ("POST", "/bank-card/tokens/"),
        ("GET", "/api/v2/files/a%20b"),
        ("GET", "/api/v2/files/a%C3%A9"),
    ] {
        assert_eq!(
            outcome(method, path),
            Ok(RouteKind::Other),
            "{method} {path}"
        );
    }
}

#[test]
fn refuses_escapes_that_are_malformed_or_not_needed_and_path_parameters() {
    for path in [
        "/api/v2/x%41y",
        "/api/v2/%7e",
        "/api/v2/a%2Db",
        "/api/v2/%zz",
        "/api/v2/%4",
        "/api/v2/x%",
        "/api/v2/status;v=1",
        "/aml/checks;/",
    ] {
        assert_eq!(outcome("GET", path), Err("bad_path"), "{path}");
    }
}

#[test]
fn decodes_only_well_formed_escapes() {
    assert_eq!(percent_decoded("/a%74b"), "/atb");
    assert_eq!(percent_decoded("/a%zz%4"), "/a%zz%4");
    assert!(matches!(percent_decoded("/plain"), Cow::Borrowed("/plain")));
}

#[test]
fn clean_paths_pass() {
    for path in [
        "/",
        "/api/v2/token",
        "/kyb/tokens/",
        "/api/v2/a.b/..c/.d",
        "/x%41y",
    ] {
        assert!(is_clean(path), "{path}");
    }
}

#[test]
fn refuses_traversal_in_every_spelling() {
    let r = routes();
    for path in [
        "/api/v2/../admin",
        "/api/v2/./token",
        "/api/v2/%2e%2e/admin",
        "/api/v2/%2E%2E/admin",
        "/api/v2/..%2fadmin",
        "/api/v2/..%5cadmin",
        "/api/v2/..\\admin",
        "/api/v2//token",
        "/api/v2/%252e%252e/x",
        "/api/v2/..",
        "/..",
        "/.",
        "//api/v2/token",
        "api/v2/token",
        "",
    ] {
        assert!(
            matches!(r.classify(&Method::GET, path), Err(GatewayError::BadPath)),
            "{path}"
        );
    }
}
