//! `config show` and `config init`: the effective config as TOML (every key with its value,
//! defaults filled in, secrets and tokens redacted), and the commented starter files.
//!
//! A key is a secret by its name ([`is_secret`]), so that a key added later is redacted without
//! being listed here; a URL's password is redacted wherever it appears.

use super::load::{parse, LoadOptions};
use super::{Config, ConfigErrors};

/// What a secret's value is shown as.
pub const REDACTED: &str = "[redacted]";

/// The commented starter file of `config init`: the sidecar example, or with `shared` the
/// shared-gateway one (each passes `check-config --offline` as it is).
pub fn starter(shared: bool) -> &'static str {
    if shared {
        include_str!("../../config/shared-gateway.toml")
    } else {
        include_str!("../../config/sidecar.toml")
    }
}

/// The effective config of `text` as TOML, or every problem in it.
pub fn show(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    options: LoadOptions,
) -> Result<String, ConfigErrors> {
    let parsed = parse(text, env, options)?;
    let mut doc = toml::Value::try_from(&parsed.raw).expect("the raw config serializes to TOML");
    let unset = serde_json::to_value(&parsed.raw).expect("the raw config serializes to JSON");
    fill_effective(&mut doc, &parsed.config);
    redact(&mut doc, "");
    Ok(render(&doc, &unset))
}

/// The values `validate` decides beyond the file's defaults: each team's account, `max_wait`.
fn fill_effective(doc: &mut toml::Value, config: &Config) {
    let max_wait = humantime::format_duration(config.limits.max_wait).to_string();
    if let Some(limits) = doc.get_mut("limits").and_then(toml::Value::as_table_mut) {
        limits.insert("max_wait".into(), toml::Value::String(max_wait));
    }
    let teams = doc.get_mut("team").and_then(toml::Value::as_array_mut);
    for (raw, team) in teams.into_iter().flatten().zip(&config.teams) {
        if let Some(raw) = raw.as_table_mut() {
            let account = config.accounts.get(team.account).map(|a| a.name.clone());
            if let (None, Some(account)) = (raw.get("account"), account) {
                raw.insert("account".into(), toml::Value::String(account));
            }
        }
    }
}

/// Whether the key named `key` holds a secret: a token, a key, a secret, a password; not a
/// file naming one (`api_key_file`).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    !key.ends_with("_file")
        && (key == "token"
            || key == "tokens"
            || key.ends_with("_token")
            || key.ends_with("_tokens")
            || key.ends_with("_key")
            || key.ends_with("_secret")
            || key.contains("password"))
}

fn redact(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                redact(item, key);
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|item| redact(item, key)),
        toml::Value::String(s) if is_secret(key) => *s = REDACTED.to_string(),
        toml::Value::String(s) => *s = redact_url_password(s),
        // An `f32` key (`retry.budget_ratio`) as the file wrote it: 0.2, not 0.20000000298023224.
        toml::Value::Float(f) if f64::from(*f as f32) == *f => {
            *f = (*f as f32).to_string().parse().unwrap_or(*f);
        }
        _ => {}
    }
}

/// `redis://user:pass@host/0` → `redis://user:[redacted]@host/0`; other text unchanged.
fn redact_url_password(s: &str) -> String {
    let Some(scheme_end) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let authority_end = s[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| scheme_end + i);
    let authority = &s[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let host = &authority[at..];
            format!(
                "{}{user}:{REDACTED}{host}{}",
                &s[..scheme_end],
                &s[authority_end..]
            )
        }
        None => s.to_string(),
    }
}

/// TOML text: the top-level keys in the file's order, a `[section]` or `[[section]]` each; a key
/// without a value (an optional one not given) as a comment.
fn render(doc: &toml::Value, unset: &serde_json::Value) -> String {
    let mut out = String::new();
    let Some(sections) = doc.as_table() else {
        return out;
    };
    for (name, value) in sections {
        match value {
            toml::Value::Table(table) => {
                out.push_str(&format!("\n[{name}]\n"));
                section(&mut out, table, &unset[name.as_str()]);
            }
            toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&format!("\n[[{name}]]\n"));
                    let table = item.as_table().expect("checked above");
                    section(&mut out, table, &unset[name.as_str()][i]);
                }
            }
            other => out.insert_str(0, &format!("{name} = {other}\n")),
        }
    }
    out.trim_start().to_string()
}

fn section(out: &mut String, table: &toml::Table, unset: &serde_json::Value) {
    for (key, value) in table {
        out.push_str(&format!("{key} = {value}\n"));
    }
    let not_given = unset.as_object().into_iter().flatten();
    for (key, _) in not_given.filter(|(k, v)| v.is_null() && !table.contains_key(k.as_str())) {
        out.push_str(&format!("# {key} (not set)\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_known_by_their_key_names() {
        for secret in [
            "api_key",
            "api_secret",
            "token",
            "tokens",
            "webhook_key",
            "password",
        ] {
            assert!(is_secret(secret), "{secret}");
        }
        for plain in [
            "api_key_file",
            "token_file",
            "name",
            "key_prefix",
            "redis_url",
            "rate",
        ] {
            assert!(!is_secret(plain), "{plain}");
        }
    }

    #[test]
    fn redacts_the_password_of_a_url() {
        assert_eq!(
            redact_url_password("redis://app:hunter2@redis:6379/0"),
            "redis://app:[redacted]@redis:6379/0"
        );
        assert_eq!(
            redact_url_password("redis://:hunter2@redis"),
            "redis://:[redacted]@redis"
        );
        for plain in ["https://ivs.idenfy.com", "a@b", "not a url"] {
            assert_eq!(redact_url_password(plain), plain);
        }
    }
}
