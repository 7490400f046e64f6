//! `[state]`: the backend of the shared state (`memory` or `redis`), the Redis server's URL and
//! password, the key prefix, the per-operation timeout and what to do while Redis is down.

use super::load::Problems;
use super::ranges;
use super::raw::RawState;
use super::{OnUnavailable, Redis, State};
use crate::secret::Secret;
use std::path::{Path, PathBuf};

/// `state.*` checked: the backend, and with `redis` its URL (required, `redis://` or
/// `rediss://`), password file, prefix, timeout and fallback.
pub(super) fn state(p: &mut Problems, raw: &RawState) -> State {
    let redis = redis(p, raw);
    match raw.backend.as_str() {
        "memory" => State::Memory,
        "redis" => match raw.redis_url.as_deref() {
            Some(url) => {
                check_url(p, url);
                if raw.redis_ca_file.is_some() && !url.starts_with("rediss://") {
                    p.add(
                        "state.redis_ca_file",
                        "only with a rediss:// URL (the CA checks the server's TLS certificate)",
                    );
                }
                State::Redis(Redis {
                    url: Secret::new(url),
                    ..redis
                })
            }
            None => {
                p.add(
                    "state.redis_url",
                    "missing: state.backend = \"redis\" needs a redis:// or rediss:// URL",
                );
                State::Memory
            }
        },
        other => {
            p.add(
                "state.backend",
                format!("expected \"memory\" or \"redis\", got {other:?}"),
            );
            State::Memory
        }
    }
}

/// The keys other than the URL, checked whatever the backend (a wrong value is wrong in a
/// file that switches to Redis later too).
fn redis(p: &mut Problems, raw: &RawState) -> Redis {
    if raw.key_prefix.contains(['{', '}']) {
        p.add(
            "state.key_prefix",
            format!(
                "must not hold '{{' or '}}' (the account is the key's hash tag), got {:?}",
                raw.key_prefix
            ),
        );
    }
    let on_unavailable = match raw.on_unavailable.as_str() {
        "local" => OnUnavailable::Local,
        "refuse" => OnUnavailable::Refuse,
        other => {
            p.add(
                "state.on_unavailable",
                format!("expected \"local\" or \"refuse\", got {other:?}"),
            );
            OnUnavailable::Local
        }
    };
    let password_file = raw.redis_password_file.as_ref().map(PathBuf::from);
    if let Some(file) = password_file.as_ref().filter(|_| !p.offline()) {
        if let Err(e) = crate::credentials::read_secret_file(Path::new(file)) {
            p.environment("state.redis_password_file", e);
        }
    }
    let ca_file = raw.redis_ca_file.as_ref().map(PathBuf::from);
    if let Some(file) = ca_file.as_ref().filter(|_| !p.offline()) {
        if let Err(e) = read_ca(file) {
            p.environment("state.redis_ca_file", e);
        }
    }
    Redis {
        url: Secret::new(""),
        password_file,
        ca_file,
        key_prefix: raw.key_prefix.clone(),
        timeout: p.duration("state.timeout", &raw.timeout, ranges::REDIS_TIMEOUT),
        on_unavailable,
    }
}

/// The PEM file of `state.redis_ca_file`: read, and holding at least one certificate.
pub(crate) fn read_ca(file: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!("{}: no PEM certificate in it", file.display()));
    }
    Ok(pem)
}

/// A URL the Redis client accepts: `redis://` or `rediss://` (a parse error names neither
/// the password nor the URL itself, which may hold it).
fn check_url(p: &mut Problems, url: &str) {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        p.add(
            "state.redis_url",
            "expected a redis:// or rediss:// URL (redis://[user:password@]host[:port][/db])",
        );
        return;
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        p.add("state.redis_url", format!("not a valid Redis URL: {e}"));
    }
}
