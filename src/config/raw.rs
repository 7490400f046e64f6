//! The file's shape: serde structs that refuse unknown keys. Values that need parsing
//! (durations, rates, sizes, addresses) stay strings here; `validate` turns them into types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: RawListen,
    pub upstream: RawUpstream,
    pub account: Vec<RawAccount>,
    pub team: Vec<RawTeam>,
    pub retry: RawRetry,
    pub dedup: RawDedup,
    pub validation: RawValidation,
    pub limits: RawLimits,
    pub routes: RawRoutes,
    pub state: RawState,
    pub log: RawLog,
    pub webhooks: RawWebhooks,
    pub telemetry: RawTelemetry,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListen {
    pub proxy: String,
    pub admin: String,
    pub allow_unauthenticated: bool,
    pub max_connections: usize,
    pub header_read_timeout: String,
    pub body_read_timeout: String,
    pub idle_timeout: String,
    pub max_header_bytes: String,
    pub shutdown_grace: String,
    pub webhook: Option<String>,
    /// TLS on the proxy listener: a PEM certificate chain and its key (both or neither).
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// Mutual TLS: client certificates signed by this CA (PEM) are asked for and verified.
    pub tls_client_ca_file: Option<String>,
    /// TLS on the webhook listener, as on the proxy listener; with a client CA, a verified client
    /// certificate is required.
    pub webhook_tls_cert_file: Option<String>,
    pub webhook_tls_key_file: Option<String>,
    pub webhook_tls_client_ca_file: Option<String>,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            proxy: "127.0.0.1:8080".into(),
            admin: "127.0.0.1:9090".into(),
            allow_unauthenticated: false,
            max_connections: 4096,
            header_read_timeout: "10s".into(),
            body_read_timeout: "30s".into(),
            idle_timeout: "60s".into(),
            max_header_bytes: "64KiB".into(),
            shutdown_grace: "30s".into(),
            webhook: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            webhook_tls_cert_file: None,
            webhook_tls_key_file: None,
            webhook_tls_client_ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: String,
    pub connect_timeout: String,
    pub attempt_timeout: String,
    pub deadline: String,
    pub ca_file: Option<String>,
    pub pool_idle_timeout: String,
    pub pool_max_idle: usize,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: "https://ivs.idenfy.com".into(),
            connect_timeout: "2s".into(),
            attempt_timeout: "15s".into(),
            deadline: "30s".into(),
            ca_file: None,
            pool_idle_timeout: "90s".into(),
            pool_max_idle: 256,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// Defaults to empty, which `validate` refuses: a missing name is one problem, not a file
    /// that cannot be read at all.
    #[serde(default)]
    pub name: String,
    pub api_key: Option<String>,
    pub api_key_file: Option<String>,
    pub api_secret: Option<String>,
    pub api_secret_file: Option<String>,
    #[serde(default = "default_account_rate")]
    pub rate: String,
    #[serde(default = "default_account_burst")]
    pub burst: u32,
    pub webhook_key: Option<String>,
    pub webhook_key_file: Option<String>,
}

fn default_account_rate() -> String {
    "10000/h".into()
}

fn default_account_burst() -> u32 {
    50
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    /// Defaults to empty, which `validate` refuses (as for `RawAccount::name`).
    #[serde(default)]
    pub name: String,
    /// May be omitted when exactly one account is configured.
    pub account: Option<String>,
    pub token: Option<String>,
    /// Several tokens valid at once (a rotation: add the new one, move the callers, remove the
    /// old one), beside or instead of `token`.
    pub tokens: Option<Vec<String>>,
    /// A file of tokens, one per line (`#` comments and blank lines skipped), re-read on change.
    pub token_file: Option<String>,
    /// Mutual TLS: a client certificate with this DNS name (SAN) is this team's.
    pub client_cert_san: Option<String>,
    #[serde(default = "default_team_rate")]
    pub rate: String,
    #[serde(default = "default_team_burst")]
    pub burst: u32,
    pub webhook_url: Option<String>,
    pub webhook_key: Option<String>,
    pub webhook_key_file: Option<String>,
}

fn default_team_rate() -> String {
    "20/s".into()
}

fn default_team_burst() -> u32 {
    40
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub max_attempts: u32,
    pub base: String,
    pub cap: String,
    pub budget_ratio: f32,
    pub min_retries_per_second: u32,
    pub retry_token_after_send: bool,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            max_attempts: 4,
            base: "200ms".into(),
            cap: "5s".into(),
            budget_ratio: 0.2,
            min_retries_per_second: 1,
            retry_token_after_send: false,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDedup {
    pub replay: bool,
    pub default_lifetime: String,
    pub safety_margin: String,
    pub max_entries: u64,
    pub max_bytes: String,
    pub recheck_after: String,
}

impl Default for RawDedup {
    fn default() -> Self {
        RawDedup {
            replay: true,
            default_lifetime: "1h".into(),
            safety_margin: "30s".into(),
            max_entries: 100_000,
            max_bytes: "64MiB".into(),
            recheck_after: "1m".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawValidation {
    pub enabled: bool,
}

impl Default for RawValidation {
    fn default() -> Self {
        RawValidation { enabled: true }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// `None`: [`DEFAULT_MAX_WAIT`], shortened to the deadline when that is shorter; only a
    /// value given in the file is refused for exceeding the deadline.
    pub max_wait: Option<String>,
    pub max_body: String,
}

pub const DEFAULT_MAX_WAIT: &str = "2s";

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_wait: None,
            max_body: "16MiB".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoutes {
    pub prefixes: Vec<String>,
}

/// iDenfy's API path prefixes (idenfy-api.md §3).
pub const DEFAULT_PREFIXES: &[&str] = &[
    "/api/v2/",
    "/kyc/",
    "/kyb/",
    "/aml/",
    "/identification/",
    "/partner/",
    "/bank-card/",
    "/age-estimation/",
    "/fraud/",
];

impl Default for RawRoutes {
    fn default() -> Self {
        RawRoutes {
            prefixes: DEFAULT_PREFIXES.iter().map(|p| p.to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub backend: String,
    pub redis_url: Option<String>,
    pub redis_password_file: Option<String>,
    pub redis_ca_file: Option<String>,
    pub key_prefix: String,
    pub timeout: String,
    pub on_unavailable: String,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            backend: "memory".into(),
            redis_url: None,
            redis_password_file: None,
            redis_ca_file: None,
            key_prefix: "idenfy-gateway:".into(),
            timeout: "50ms".into(),
            on_unavailable: "local".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhooks {
    pub dir: String,
    pub retry_base: String,
    pub retry_cap: String,
    pub max_age: String,
    pub unknown: String,
    pub delivery_timeout: String,
    pub reclaim_after: String,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        RawWebhooks {
            dir: "/var/lib/idenfy-gateway".into(),
            retry_base: "1s".into(),
            retry_cap: "5m".into(),
            max_age: "72h".into(),
            unknown: "dead".into(),
            delivery_timeout: "10s".into(),
            reclaim_after: "5s".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// OTLP/HTTP collector base URL (`http://host:4318`): spans go to `<it>/v1/traces`.
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            otlp_endpoint: None,
            otlp_service_name: "idenfy-gateway".into(),
        }
    }
}
