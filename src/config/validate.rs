//! Validation: the raw file's values checked and turned into the typed config, every problem
//! recorded with its key path (`team[1].rate: expected N/s, N/m or N/h, got "fast"`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use super::load::Problems;
use super::raw::{
    RawAccount, RawConfig, RawDedup, RawLimits, RawListen, RawLog, RawRetry, RawTeam, RawUpstream,
    RawWebhooks, DEFAULT_MAX_WAIT,
};
use super::*;
use super::{ranges, values};
use crate::secret::{Secret, SecretSource};

/// The typed config, and every problem found in the values. Offline, no file the config names
/// is read. Values found wrong stand in as their defaults (or the nearest valid value), so that
/// the others are still checked.
pub(super) fn validate(raw: &RawConfig, offline: bool) -> (Config, Vec<ConfigError>) {
    let mut p = Problems(Vec::new(), offline);
    let listen = listen(&mut p, &raw.listen);
    let upstream = upstream(&mut p, &raw.upstream);
    let accounts: Vec<Account> = raw
        .account
        .iter()
        .enumerate()
        .map(|(i, a)| account(&mut p, i, a))
        .collect();
    if accounts.is_empty() {
        p.add("account", "at least one [[account]] is required");
    }
    unique_names(&mut p, "account", accounts.iter().map(|a| a.name.as_str()));
    let teams: Vec<Team> = raw
        .team
        .iter()
        .enumerate()
        .map(|(i, t)| team(&mut p, i, t, &accounts))
        .collect();
    if teams.is_empty() {
        p.add("team", "at least one [[team]] is required");
    }
    unique_names(&mut p, "team", teams.iter().map(|t| t.name.as_str()));
    check_team_tokens(&mut p, &teams, &listen);
    let webhooks = webhooks(&mut p, &raw.webhooks, &teams);
    let config = Config {
        webhooks,
        retry: retry(&mut p, &raw.retry),
        dedup: dedup(&mut p, &raw.dedup),
        validation: Validation {
            enabled: raw.validation.enabled,
        },
        limits: limits(&mut p, &raw.limits, &raw.upstream.deadline),
        routes: routes(&mut p, raw.routes.prefixes.clone()),
        state: super::state::state(&mut p, &raw.state),
        log: log(&mut p, &raw.log),
        telemetry: super::telemetry::telemetry(&mut p, &raw.telemetry),
        listen,
        upstream,
        accounts,
        teams,
    };
    (config, p.0)
}

fn listen(p: &mut Problems, raw: &RawListen) -> Listen {
    Listen {
        proxy: addr(p, "listen.proxy", &raw.proxy),
        admin: addr(p, "listen.admin", &raw.admin),
        allow_unauthenticated: raw.allow_unauthenticated,
        max_connections: positive(p, "listen.max_connections", raw.max_connections),
        header_read_timeout: p.duration(
            "listen.header_read_timeout",
            &raw.header_read_timeout,
            ranges::TIMEOUT,
        ),
        body_read_timeout: p.duration(
            "listen.body_read_timeout",
            &raw.body_read_timeout,
            ranges::TIMEOUT,
        ),
        idle_timeout: p.duration("listen.idle_timeout", &raw.idle_timeout, ranges::TIMEOUT),
        max_header_bytes: p.size("listen.max_header_bytes", &raw.max_header_bytes) as usize,
        shutdown_grace: p.duration(
            "listen.shutdown_grace",
            &raw.shutdown_grace,
            ranges::SHUTDOWN_GRACE,
        ),
        webhook: raw.webhook.as_deref().map(|a| addr(p, "listen.webhook", a)),
        tls: super::tls::tls(p, raw),
        webhook_tls: super::tls::webhook_tls(p, raw),
    }
}

/// `[webhooks]`: the backoff bounds (base ≤ cap), the age limit, and `unknown` as `"dead"` or a
/// team's name.
fn webhooks(p: &mut Problems, raw: &RawWebhooks, teams: &[Team]) -> Webhooks {
    let base = p.duration_checked("webhooks.retry_base", &raw.retry_base, ranges::BACKOFF);
    let cap = p.duration_checked("webhooks.retry_cap", &raw.retry_cap, ranges::BACKOFF);
    if let (Some(base), Some(cap)) = (base, cap) {
        if base > cap {
            p.add(
                "webhooks.retry_base",
                format!(
                    "must not exceed webhooks.retry_cap, got {:?}",
                    raw.retry_base
                ),
            );
        }
    }
    let min = ranges::BACKOFF.min;
    let unknown = match raw.unknown.as_str() {
        "dead" => UnknownScanRef::Dead,
        name => match teams.iter().position(|t| t.name == name) {
            Some(i) => UnknownScanRef::Team(i),
            None => {
                p.add(
                    "webhooks.unknown",
                    format!("expected \"dead\" or a team's name, got {name:?}"),
                );
                UnknownScanRef::Dead
            }
        },
    };
    if raw.dir.is_empty() {
        p.add("webhooks.dir", "must not be empty");
    }
    Webhooks {
        dir: PathBuf::from(&raw.dir),
        retry_base: base.unwrap_or(min),
        retry_cap: cap.unwrap_or(min).max(base.unwrap_or(min)),
        max_age: p.duration("webhooks.max_age", &raw.max_age, ranges::WEBHOOK_MAX_AGE),
        unknown,
        delivery_timeout: p.duration(
            "webhooks.delivery_timeout",
            &raw.delivery_timeout,
            ranges::TIMEOUT,
        ),
        reclaim_after: p.duration(
            "webhooks.reclaim_after",
            &raw.reclaim_after,
            ranges::RECLAIM_AFTER,
        ),
    }
}

fn upstream(p: &mut Problems, raw: &RawUpstream) -> Upstream {
    let ca_file = raw.ca_file.as_ref().map(PathBuf::from);
    if let Some(ca) = ca_file.as_ref().filter(|_| !p.offline()) {
        if let Err(e) = std::fs::metadata(ca) {
            p.environment(
                "upstream.ca_file",
                format!("cannot read {}: {e}", ca.display()),
            );
        }
    }
    Upstream {
        url: upstream_url(p, &raw.url),
        connect_timeout: p.duration(
            "upstream.connect_timeout",
            &raw.connect_timeout,
            ranges::TIMEOUT,
        ),
        attempt_timeout: p.duration(
            "upstream.attempt_timeout",
            &raw.attempt_timeout,
            ranges::TIMEOUT,
        ),
        deadline: p.duration("upstream.deadline", &raw.deadline, ranges::DEADLINE),
        ca_file,
        pool_idle_timeout: p.duration(
            "upstream.pool_idle_timeout",
            &raw.pool_idle_timeout,
            ranges::POOL_IDLE,
        ),
        pool_max_idle: raw.pool_max_idle,
    }
}

fn retry(p: &mut Problems, raw: &RawRetry) -> Retry {
    if !(0.0..=1000.0).contains(&raw.budget_ratio) {
        p.add(
            "retry.budget_ratio",
            format!("expected 0.0 to 1000.0, got {}", raw.budget_ratio),
        );
    }
    let max_attempts = NonZeroU32::new(raw.max_attempts).ok_or("must be at least 1".to_string());
    let (base, cap) = backoff(p, raw);
    Retry {
        max_attempts: p
            .check("retry.max_attempts", max_attempts)
            .unwrap_or(NonZeroU32::MIN),
        base,
        cap,
        budget_ratio: raw.budget_ratio,
        min_retries_per_second: raw.min_retries_per_second,
        retry_token_after_send: raw.retry_token_after_send,
    }
}

/// `retry.base` and `retry.cap`, each in its range, the base no longer than the cap.
fn backoff(p: &mut Problems, raw: &RawRetry) -> (Duration, Duration) {
    let base = p.duration_checked("retry.base", &raw.base, ranges::BACKOFF);
    let cap = p.duration_checked("retry.cap", &raw.cap, ranges::BACKOFF);
    if let (Some(base), Some(cap)) = (base, cap) {
        if base > cap {
            let cap = humantime::format_duration(cap);
            p.add(
                "retry.base",
                format!("must not exceed retry.cap ({cap}), got {:?}", raw.base),
            );
        }
    }
    let min = ranges::BACKOFF.min;
    (
        base.unwrap_or(min),
        cap.unwrap_or(min).max(base.unwrap_or(min)),
    )
}

fn dedup(p: &mut Problems, raw: &RawDedup) -> Dedup {
    Dedup {
        replay: raw.replay,
        default_lifetime: p.duration(
            "dedup.default_lifetime",
            &raw.default_lifetime,
            ranges::TOKEN_LIFETIME,
        ),
        safety_margin: p.duration(
            "dedup.safety_margin",
            &raw.safety_margin,
            ranges::SAFETY_MARGIN,
        ),
        max_entries: positive(p, "dedup.max_entries", raw.max_entries as usize) as u64,
        max_bytes: p.size("dedup.max_bytes", &raw.max_bytes),
        recheck_after: p.duration(
            "dedup.recheck_after",
            &raw.recheck_after,
            ranges::RECHECK_AFTER,
        ),
    }
}

/// `[limits]`: `max_wait` in its range and, when the file gives it, no longer than a valid
/// `deadline`; by default 2s, or the deadline when that is shorter.
fn limits(p: &mut Problems, raw: &RawLimits, deadline: &str) -> Limits {
    let path = "limits.max_wait";
    let text = raw.max_wait.as_deref().unwrap_or(DEFAULT_MAX_WAIT);
    let max_wait = p.duration_checked(path, text, ranges::MAX_WAIT);
    let deadline = values::duration(deadline)
        .ok()
        .filter(|d| ranges::DEADLINE.contains(*d));
    if let (Some(wait), Some(deadline), Some(_)) = (max_wait, deadline, &raw.max_wait) {
        if wait > deadline {
            let deadline = humantime::format_duration(deadline);
            p.add(
                path,
                format!("must not exceed upstream.deadline ({deadline}), got {text:?}"),
            );
        }
    }
    let max_wait = max_wait.unwrap_or_default();
    Limits {
        max_wait: deadline.map_or(max_wait, |d| max_wait.min(d)),
        max_body: p.size("limits.max_body", &raw.max_body),
    }
}

fn routes(p: &mut Problems, prefixes: Vec<String>) -> Routes {
    for (i, prefix) in prefixes.iter().enumerate() {
        let ok = prefix.starts_with('/')
            && prefix.ends_with('/')
            && prefix.len() >= 3
            && !prefix.contains("..");
        if !ok {
            p.add(
                format!("routes.prefixes[{i}]"),
                format!("expected a path prefix like \"/api/v2/\", got {prefix:?}"),
            );
        }
    }
    Routes { prefixes }
}

fn log(p: &mut Problems, raw: &RawLog) -> Log {
    let format = match raw.format.as_str() {
        "json" => LogFormat::Json,
        "human" => LogFormat::Human,
        other => {
            p.add(
                "log.format",
                format!("expected \"json\" or \"human\", got {other:?}"),
            );
            LogFormat::Json
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
        p.add(
            "log.level",
            format!("not a tracing filter: {:?}", raw.level),
        );
    }
    Log {
        format,
        level: raw.level.clone(),
    }
}

fn addr(p: &mut Problems, path: &str, s: &str) -> SocketAddr {
    p.check(
        path,
        s.parse()
            .map_err(|_| format!("expected an address like \"127.0.0.1:8080\", got {s:?}")),
    )
    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn positive(p: &mut Problems, path: &str, n: usize) -> usize {
    if n == 0 {
        p.add(path, "must be at least 1");
    }
    n.max(1)
}

fn upstream_url(p: &mut Problems, s: &str) -> http::Uri {
    let parsed = s
        .parse::<http::Uri>()
        .map_err(|e| e.to_string())
        .and_then(|uri| match (uri.scheme_str(), uri.host(), uri.path()) {
            (Some("http" | "https"), Some(_), "/" | "") if uri.query().is_none() => Ok(uri),
            _ => Err(format!(
                "expected a base URL like \"https://ivs.idenfy.com\", got {s:?}"
            )),
        });
    p.check("upstream.url", parsed)
        .unwrap_or_else(|| http::Uri::from_static("http://invalid"))
}

fn rate_burst(p: &mut Problems, path: &str, rate: &str, burst: u32) -> (Rate, NonZeroU32) {
    let rate = p.check(format!("{path}.rate"), values::rate(rate));
    let burst = p.check(
        format!("{path}.burst"),
        NonZeroU32::new(burst).ok_or("must be at least 1".into()),
    );
    let fallback = Rate {
        count: NonZeroU32::MIN,
        per: std::time::Duration::from_secs(1),
    };
    (rate.unwrap_or(fallback), burst.unwrap_or(NonZeroU32::MIN))
}

fn account(p: &mut Problems, i: usize, raw: &RawAccount) -> Account {
    let path = format!("account[{i}]");
    if raw.name.is_empty() {
        p.add(format!("{path}.name"), "missing or empty");
    }
    let api_key = secret_source(p, &path, "api_key", &raw.api_key, &raw.api_key_file);
    let api_secret = secret_source(
        p,
        &path,
        "api_secret",
        &raw.api_secret,
        &raw.api_secret_file,
    );
    let (rate, burst) = rate_burst(p, &path, &raw.rate, raw.burst);
    let webhook_key = optional_secret(
        p,
        &path,
        "webhook_key",
        &raw.webhook_key,
        &raw.webhook_key_file,
    );
    Account {
        name: raw.name.clone(),
        api_key,
        api_secret,
        rate,
        burst,
        webhook_key,
    }
}

/// A secret that may be absent: `None` when neither `{key}` nor `{key}_file` is given.
fn optional_secret(
    p: &mut Problems,
    path: &str,
    key: &str,
    inline: &Option<String>,
    file: &Option<String>,
) -> Option<SecretSource> {
    if inline.is_none() && file.is_none() {
        return None;
    }
    Some(secret_source(p, path, key, inline, file))
}

/// `team[i].webhook_url` (an http(s) URL) with its `webhook_key`: both or neither.
fn team_webhook(p: &mut Problems, path: &str, raw: &RawTeam) -> Option<TeamWebhook> {
    let key = optional_secret(
        p,
        path,
        "webhook_key",
        &raw.webhook_key,
        &raw.webhook_key_file,
    );
    let url = raw.webhook_url.as_deref().map(|s| {
        let parsed = s
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        p.check(
            format!("{path}.webhook_url"),
            parsed.ok_or(format!("expected an http(s) URL, got {s:?}")),
        )
        .unwrap_or_else(|| http::Uri::from_static("http://invalid"))
    });
    match (url, key) {
        (Some(url), Some(key)) => Some(TeamWebhook { url, key }),
        (None, None) => None,
        (Some(_), None) => {
            p.add(
                format!("{path}.webhook_key"),
                "missing: deliveries to webhook_url are signed with the team's webhook_key \
                 (or webhook_key_file)",
            );
            None
        }
        (None, Some(_)) => {
            p.add(
                format!("{path}.webhook_url"),
                "missing: webhook_key is set but there is no webhook_url",
            );
            None
        }
    }
}

fn secret_source(
    p: &mut Problems,
    path: &str,
    key: &str,
    inline: &Option<String>,
    file: &Option<String>,
) -> SecretSource {
    match (inline, file) {
        (Some(value), None) if !value.is_empty() => {
            SecretSource::Inline(Secret::new(value.as_str()))
        }
        (Some(_), None) => {
            p.add(format!("{path}.{key}"), "must not be empty");
            SecretSource::Inline(Secret::new(""))
        }
        (None, Some(file)) => {
            if !p.offline() {
                if let Err(e) = crate::credentials::read_secret_file(Path::new(file)) {
                    p.environment(format!("{path}.{key}_file"), e);
                }
            }
            SecretSource::File(PathBuf::from(file))
        }
        (Some(_), Some(_)) => {
            p.add(
                format!("{path}.{key}"),
                format!("give either {key} or {key}_file, not both"),
            );
            SecretSource::Inline(Secret::new(""))
        }
        (None, None) => {
            p.add(
                format!("{path}.{key}"),
                format!("missing: give {key} or {key}_file"),
            );
            SecretSource::Inline(Secret::new(""))
        }
    }
}

fn team(p: &mut Problems, i: usize, raw: &RawTeam, accounts: &[Account]) -> Team {
    let path = format!("team[{i}]");
    if raw.name.is_empty() || raw.name.contains(':') {
        p.add(
            format!("{path}.name"),
            "must be non-empty and contain no ':'",
        );
    }
    let account = match &raw.account {
        // No account at all is reported once, at `account`.
        _ if accounts.is_empty() => 0,
        Some(name) => accounts
            .iter()
            .position(|a| &a.name == name)
            .unwrap_or_else(|| {
                p.add(
                    format!("{path}.account"),
                    format!("no [[account]] is named {name:?}"),
                );
                0
            }),
        None if accounts.len() == 1 => 0,
        None => {
            p.add(
                format!("{path}.account"),
                "missing: several accounts exist, name one",
            );
            0
        }
    };
    let (tokens, token_file) = super::tokens::team_tokens(p, &path, raw);
    if raw.client_cert_san.as_deref() == Some("") {
        p.add(format!("{path}.client_cert_san"), "must not be empty");
    }
    let (rate, burst) = rate_burst(p, &path, &raw.rate, raw.burst);
    let webhook = team_webhook(p, &path, raw);
    Team {
        name: raw.name.clone(),
        account,
        tokens,
        token_file,
        client_cert_san: raw.client_cert_san.clone(),
        rate,
        burst,
        webhook,
    }
}

fn unique_names<'a>(p: &mut Problems, section: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            p.add(
                format!("{section}[{i}].name"),
                format!("duplicate name {name:?}"),
            );
        }
    }
}

fn check_team_tokens(p: &mut Problems, teams: &[Team], listen: &Listen) {
    let tokenless: Vec<usize> = (0..teams.len())
        .filter(|&i| !teams[i].authenticates())
        .collect();
    if tokenless.len() > 1 {
        p.add(
            format!("team[{}].token", tokenless[1]),
            "at most one team may have no token",
        );
    }
    if let Some(&i) = tokenless.first() {
        if !listen.proxy.ip().is_loopback() && !listen.allow_unauthenticated {
            p.add(
                format!("team[{i}].token"),
                "a team without a token is only allowed on a loopback listener; \
                 set listen.allow_unauthenticated = true to serve it on listen.proxy anyway",
            );
        }
    }
    super::tokens::check_unique(p, teams);
    super::tls::check_client_cert_sans(p, teams, listen);
}
