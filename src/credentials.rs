//! Credentials: the iDenfy account's `Authorization: Basic base64(key:secret)` replaces whatever
//! the caller sent, and the request head is cleaned for the upstream hop. Innermost but one:
//! runs on every attempt, right before the upstream client.
//!
//! Secrets from files are re-read when the file changes (Kubernetes swaps a symlink inside the
//! secret volume's directory, so the directory is watched, with a slow poll as a safety net).
//! A failed re-read keeps the last good header and says so in the log and a metric.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use tower::{Layer, Service};

use crate::body::Body;
use crate::config::Account;
use crate::context::ContextExt;
use crate::error::GatewayError;
use crate::headers::set_single;
use crate::secret::SecretSource;

/// How often file-based secrets are re-read even when no change was signalled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// Reads a secret file: trailing whitespace and newlines trimmed, empty refused. The error
/// names the file, never its content.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r', ' ', '\t']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value.to_string())
}

fn resolve(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Inline(secret) => Ok(secret.expose().to_string()),
        SecretSource::File(path) => read_secret_file(path),
    }
}

/// `Basic base64(key:secret)`, marked sensitive so hyper's HPACK never indexes it.
fn basic_header(key: &str, secret: &str) -> Result<HeaderValue, String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| "not a valid header value".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

struct AccountCredentials {
    name: String,
    key: SecretSource,
    secret: SecretSource,
    header: ArcSwap<HeaderValue>,
}

impl AccountCredentials {
    fn load(&self) -> Result<HeaderValue, String> {
        basic_header(&resolve(&self.key)?, &resolve(&self.secret)?)
    }

    fn has_files(&self) -> bool {
        matches!(self.key, SecretSource::File(_)) || matches!(self.secret, SecretSource::File(_))
    }
}

/// The current `Authorization` header of every account, swapped atomically on rotation.
#[derive(Clone)]
pub struct Credentials {
    accounts: Arc<[AccountCredentials]>,
    reloads: IntCounterVec,
}

impl Credentials {
    /// Reads every account's secrets once. Fails (naming the account, not the secret) if one
    /// cannot be read.
    pub fn load(accounts: &[Account], registry: &Registry) -> anyhow::Result<Self> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_credential_reloads_total",
                "Re-reads of file-based secrets, by outcome",
            ),
            &["account", "outcome"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let mut loaded = Vec::with_capacity(accounts.len());
        for account in accounts {
            let mut creds = AccountCredentials {
                name: account.name.clone(),
                key: account.api_key.clone(),
                secret: account.api_secret.clone(),
                header: ArcSwap::from_pointee(HeaderValue::from_static("")),
            };
            let header = creds
                .load()
                .map_err(|e| anyhow::anyhow!("account {:?}: {e}", account.name))?;
            creds.header = ArcSwap::from_pointee(header);
            loaded.push(creds);
        }
        Ok(Credentials {
            accounts: loaded.into(),
            reloads,
        })
    }

    /// The header for an account.
    pub fn header(&self, account: usize) -> Arc<HeaderValue> {
        self.accounts[account].header.load_full()
    }

    /// Re-reads file-based secrets; swaps in what changed; keeps the last good value on error.
    pub fn reload(&self) {
        for account in self.accounts.iter().filter(|a| a.has_files()) {
            match account.load() {
                Ok(header) if header == **account.header.load() => {}
                Ok(header) => {
                    account.header.store(Arc::new(header));
                    self.reloads.with_label_values(&[&account.name, "ok"]).inc();
                    tracing::info!(account = %account.name, "credentials reloaded");
                }
                Err(error) => {
                    self.reloads
                        .with_label_values(&[&account.name, "error"])
                        .inc();
                    tracing::warn!(account = %account.name, %error, "credential reload failed; keeping the last good credentials");
                }
            }
        }
    }

    fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .accounts
            .iter()
            .flat_map(|a| [&a.key, &a.secret])
            .filter_map(|s| match s {
                SecretSource::File(path) => {
                    Some(path.parent().unwrap_or(Path::new(".")).to_path_buf())
                }
                SecretSource::Inline(_) => None,
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Watches the directories of file-based secrets and reloads on change (and every
    /// [`POLL_INTERVAL`] in any case). Returns when `shutdown` resolves.
    pub async fn watch(self, shutdown: impl Future<Output = ()>) {
        let dirs = self.watched_dirs();
        if dirs.is_empty() {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |_event| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| {
            use notify::Watcher;
            for dir in &dirs {
                w.watch(dir, notify::RecursiveMode::NonRecursive)?;
            }
            Ok(w)
        });
        if let Err(error) = &watcher {
            tracing::warn!(%error, "cannot watch secret directories; polling only");
        }
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = poll.tick() => self.reload(),
                Some(()) = rx.recv() => self.reload(),
            }
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// Not standard names: compared as names (a standard name differs at once), not as strings
/// (which spells out every name met). Constants, as `HOP_BY_HOP`: the comparisons fold.
const KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: header::HeaderName = header::HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present, with no hashing and no allocation, noting which of them
    // are hop-by-hop; then only those are removed (most messages carry none, or only
    // `Connection: keep-alive`).
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if *name == KEEP_ALIVE {
            present |= KEEP_ALIVE_BIT;
        } else if *name == PROXY_CONNECTION {
            present |= PROXY_CONNECTION_BIT;
        }
    }
    if present == 0 {
        return;
    }
    if present & CONNECTION_BIT != 0 {
        remove_connection_named(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & KEEP_ALIVE_BIT != 0 {
        headers.remove(KEEP_ALIVE);
    }
    if present & PROXY_CONNECTION_BIT != 0 {
        headers.remove(PROXY_CONNECTION);
    }
}

/// `Connection` is `HOP_BY_HOP[0]`; the two non-standard names take the top bits.
const CONNECTION_BIT: u32 = 1 << 0;
const KEEP_ALIVE_BIT: u32 = 1 << 30;
const PROXY_CONNECTION_BIT: u32 = 1 << 31;

/// Removes the headers `Connection` names, other than the options every message may carry
/// (`close`, `keep-alive`), which cost nothing to skip.
fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| header::HeaderName::try_from(name).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
}

/// Sets the account's credentials on each attempt.
#[derive(Clone)]
pub struct SetCredentialsLayer {
    credentials: Credentials,
}

impl SetCredentialsLayer {
    pub fn new(credentials: Credentials) -> Self {
        SetCredentialsLayer { credentials }
    }
}

impl<S> Layer<S> for SetCredentialsLayer {
    type Service = SetCredentials<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetCredentials {
            inner,
            credentials: self.credentials.clone(),
        }
    }
}

/// See [`SetCredentialsLayer`].
#[derive(Clone)]
pub struct SetCredentials<S> {
    inner: S,
    credentials: Credentials,
}

impl<S> Service<Request<Bytes>> for SetCredentials<S>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        let account = req.caller().map_or(0, |c| c.account);
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        // The caller's `host` stays in the map: the upstream client writes its own and skips
        // this one (`codec::encode_request`), so removing it (a hash, a removal, a reindex) on
        // every attempt bought nothing.
        let authorization = (*self.credentials.header(account)).clone();
        // In place when the caller sent one: the retry loop's copy has no room to spare.
        set_single(headers, header::AUTHORIZATION, authorization);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn account(key: SecretSource, secret: SecretSource) -> Account {
        Account {
            name: "main".into(),
            api_key: key,
            api_secret: secret,
            rate: crate::config::values::rate("10/s").unwrap(),
            burst: std::num::NonZeroU32::MIN,
        }
    }

    #[test]
    fn connection_is_the_first_hop_by_hop_header() {
        assert_eq!(HOP_BY_HOP[0], header::CONNECTION);
        assert!(HOP_BY_HOP.len() < 30);
    }

    #[test]
    fn builds_basic_header_marked_sensitive() {
        let acc = account(
            SecretSource::Inline(Secret::new("key")),
            SecretSource::Inline(Secret::new("secret")),
        );
        let creds = Credentials::load(&[acc], &Registry::new()).unwrap();
        let header = creds.header(0);
        assert_eq!(*header, "Basic a2V5OnNlY3JldA==");
        assert!(header.is_sensitive());
    }

    #[test]
    fn reload_swaps_rotated_file_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "k1\n").unwrap();
        let acc = account(
            SecretSource::File(key.clone()),
            SecretSource::Inline(Secret::new("s")),
        );
        let registry = Registry::new();
        let creds = Credentials::load(&[acc], &registry).unwrap();
        assert_eq!(*creds.header(0), "Basic azE6cw==");
        std::fs::write(&key, "k2").unwrap();
        creds.reload();
        assert_eq!(*creds.header(0), "Basic azI6cw==");
        std::fs::remove_file(&key).unwrap();
        creds.reload();
        assert_eq!(*creds.header(0), "Basic azI6cw==");
        assert_eq!(creds.reloads.with_label_values(&["main", "error"]).get(), 1);
        assert_eq!(creds.reloads.with_label_values(&["main", "ok"]).get(), 1);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic eA=="),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
