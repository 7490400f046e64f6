//! Credentials: the iDenfy account's `Authorization: Basic base64(key:secret)` replaces whatever
//! the caller sent. Innermost but one: runs on every attempt, right before the upstream client,
//! so that a secret rotated between two attempts is used by the second.
//!
//! Secrets from files are re-read, off the request path's workers, when the file changes
//! (`credentials/watch.rs`: the directory is watched, with a slow poll as a safety net; only
//! changes count, and a burst of them is read once). A failed re-read keeps the last good
//! header, counts in a metric, and is logged once: when the files turn unreadable, and again
//! when they are readable again.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use tower::{Layer, Service};

use crate::body::Body;
use crate::config::Account;
use crate::context::ContextExt;
use crate::error::GatewayError;
use crate::secret::SecretSource;
use crate::upstream::Authorized;

pub(crate) mod watch;

pub use watch::{DEBOUNCE, POLL_INTERVAL};

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
    /// Whether the last read of the files succeeded: a failure is logged when this turns false.
    readable: AtomicBool,
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
        Credentials::load_counting(accounts, Credentials::register(registry)?)
    }

    /// `idenfy_gateway_credential_reloads_total`, registered in `registry` (once per registry).
    pub fn register(registry: &Registry) -> anyhow::Result<IntCounterVec> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_credential_reloads_total",
                "Re-reads of file-based secrets, by outcome",
            ),
            &["account", "outcome"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(reloads)
    }

    /// [`load`](Self::load), counting re-reads in `reloads` (see [`register`](Self::register)):
    /// a config reload loads the accounts again into the same metric.
    pub fn load_counting(accounts: &[Account], reloads: IntCounterVec) -> anyhow::Result<Self> {
        let mut loaded = Vec::with_capacity(accounts.len());
        for account in accounts {
            let mut creds = AccountCredentials {
                name: account.name.clone(),
                key: account.api_key.clone(),
                secret: account.api_secret.clone(),
                header: ArcSwap::from_pointee(HeaderValue::from_static("")),
                readable: AtomicBool::new(true),
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

    /// Re-reads file-based secrets on the blocking pool; swaps in what changed; keeps the last
    /// good value on error.
    pub async fn reload(&self) {
        self.reload_noting().await;
    }

    /// [`Credentials::reload`], saying what it logged for each account with files.
    async fn reload_noting(&self) -> Vec<Noted> {
        let accounts = self.accounts.clone();
        let read = tokio::task::spawn_blocking(move || {
            let with_files = accounts.iter().filter(|a| a.has_files());
            with_files.map(AccountCredentials::load).collect::<Vec<_>>()
        });
        // Only a runtime shutting down cancels it: nothing to reload for then.
        let Ok(read) = read.await else {
            return Vec::new();
        };
        let with_files = self.accounts.iter().filter(|a| a.has_files());
        with_files
            .zip(read)
            .map(|(account, header)| self.settle(account, header))
            .collect()
    }

    /// Takes the outcome of reading one account's files: a new header is swapped in; a failure
    /// is counted each time and logged only when the account's files were readable before, and
    /// their recovery is logged once.
    fn settle(&self, account: &AccountCredentials, read: Result<HeaderValue, String>) -> Noted {
        let was_readable = account.readable.swap(read.is_ok(), Ordering::Relaxed);
        let name = &account.name;
        match read {
            Ok(header) if header != **account.header.load() => {
                account.header.store(Arc::new(header));
                self.reloads.with_label_values(&[name, "ok"]).inc();
                tracing::info!(account = %name, "credentials reloaded");
                Noted::Reloaded
            }
            Ok(_) if !was_readable => {
                tracing::info!(account = %name, "credential files readable again, unchanged");
                Noted::ReadableAgain
            }
            Ok(_) => Noted::Nothing,
            Err(error) => {
                self.reloads.with_label_values(&[name, "error"]).inc();
                if !was_readable {
                    return Noted::Nothing;
                }
                tracing::warn!(account = %name, %error, "credential reload failed; keeping the last good credentials, and not logging this again until the files can be read");
                Noted::Failed
            }
        }
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.accounts
            .iter()
            .flat_map(|a| [&a.key, &a.secret])
            .filter_map(|s| match s {
                SecretSource::File(path) => Some(path.clone()),
                SecretSource::Inline(_) => None,
            })
            .collect()
    }

    /// Watches the file-based secrets and reloads on change, [`DEBOUNCE`] after it (and every
    /// [`POLL_INTERVAL`] in any case). Returns when `shutdown` resolves.
    pub async fn watch(self, shutdown: impl Future<Output = ()>) {
        let files = self.watched_files();
        if files.is_empty() {
            return;
        }
        watch::watch_and_reload(&files, || self.reload(), shutdown).await;
    }
}

/// What one re-read of an account's files logged: a change of state is logged once, a failure
/// that goes on is not logged again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noted {
    /// A new pair, in use from now on (info).
    Reloaded,
    /// The files are readable again and hold the pair in use (info).
    ReadableAgain,
    /// The files stopped being readable; the last good pair stays (warn).
    Failed,
    /// Nothing worth a line: unchanged, or still failing.
    Nothing,
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

impl<S> Service<Arc<Request<Bytes>>> for SetCredentials<S>
where
    S: Service<Authorized, Response = Response<Body>, Error = GatewayError>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    /// The request is the retry loop's, shared by every attempt, and is not edited: the caller's
    /// `Authorization` stays in it and the upstream client writes the account's instead
    /// (`codec::encode_request`). Hop-by-hop headers were removed when it came in (`front`).
    fn call(&mut self, request: Arc<Request<Bytes>>) -> Self::Future {
        let account = request.caller().map_or(0, |c| c.account);
        let authorization = self.credentials.header(account);
        self.inner.call(Authorized {
            request,
            authorization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::Duration;

    fn account(key: SecretSource, secret: SecretSource) -> Account {
        Account {
            name: "main".into(),
            api_key: key,
            api_secret: secret,
            rate: crate::config::values::rate("10/s").unwrap(),
            burst: std::num::NonZeroU32::MIN,
            webhook_key: None,
        }
    }

    /// An account whose key is read from the file `key` in `dir`, written `k1` (its header:
    /// `Basic azE6cw==`), and whose secret is `s`: that file, and the account.
    fn key_file_account(dir: &std::path::Path) -> (std::path::PathBuf, Account) {
        let key = dir.join("key");
        std::fs::write(&key, "k1\n").unwrap();
        let acc = account(
            SecretSource::File(key.clone()),
            SecretSource::Inline(Secret::new("s")),
        );
        (key, acc)
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

    #[tokio::test]
    async fn reload_swaps_rotated_file_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (key, acc) = key_file_account(dir.path());
        let registry = Registry::new();
        let creds = Credentials::load(&[acc], &registry).unwrap();
        assert_eq!(*creds.header(0), "Basic azE6cw==");
        std::fs::write(&key, "k2").unwrap();
        creds.reload().await;
        assert_eq!(*creds.header(0), "Basic azI6cw==");
        std::fs::remove_file(&key).unwrap();
        creds.reload().await;
        assert_eq!(*creds.header(0), "Basic azI6cw==");
        assert_eq!(creds.reloads.with_label_values(&["main", "error"]).get(), 1);
        assert_eq!(creds.reloads.with_label_values(&["main", "ok"]).get(), 1);
    }

    /// Sends a change signal every 5 ms for `d`, as a watcher would (its channel holds one).
    async fn signal_for(changes: &tokio::sync::mpsc::Sender<()>, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < end {
            let _ = changes.try_send(());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(DEBOUNCE * 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_secret_file_is_logged_once_and_its_return_once() {
        let dir = tempfile::tempdir().unwrap();
        let (key, acc) = key_file_account(dir.path());
        let creds = Credentials::load(&[acc], &Registry::new()).unwrap();
        // What each re-read logged, in order (read from the reloads themselves, not from a
        // captured subscriber: tracing's per-callsite interest is process-wide, and a capture
        // set for one test thread can miss lines while other tests run).
        let noted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (changes, signals) = tokio::sync::mpsc::channel(1);
        let (watched, record) = (creds.clone(), noted.clone());
        let watcher = tokio::spawn(async move {
            let reload = || async {
                let notes = watched.reload_noting().await;
                record.lock().unwrap().extend(notes);
            };
            let forever = std::future::pending();
            watch::reload_on_change(signals, POLL_INTERVAL, DEBOUNCE, reload, forever).await;
        });
        let logged = || -> Vec<Noted> {
            let all = noted.lock().unwrap();
            all.iter()
                .copied()
                .filter(|n| *n != Noted::Nothing)
                .collect()
        };

        std::fs::remove_file(&key).unwrap();
        let start = tokio::time::Instant::now();
        signal_for(&changes, Duration::from_secs(5)).await;
        let failed = creds.reloads.with_label_values(&["main", "error"]).get();
        let bound = start.elapsed().as_millis() / DEBOUNCE.as_millis();
        assert!(
            (2..=bound as u64).contains(&failed),
            "{failed} attempts, bound {bound}"
        );
        assert_eq!(noted.lock().unwrap().len() as u64, failed);
        assert_eq!(logged(), [Noted::Failed]);

        std::fs::write(&key, "k1\n").unwrap();
        signal_for(&changes, Duration::from_secs(1)).await;
        assert_eq!(logged(), [Noted::Failed, Noted::ReadableAgain]);
        assert_eq!(*creds.header(0), "Basic azE6cw==");
        watcher.abort();
    }
}
