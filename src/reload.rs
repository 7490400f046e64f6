//! Live reload: on SIGHUP, and when the file's content changes ([`file`]), the gateway reads its
//! config file again, validates it whole, and swaps it in if it is valid; an invalid file is
//! refused with its problems logged, and the running config stays.
//!
//! The proxy's service is [`Live`]: the listener holds it, and each request is served by the
//! stack current when it arrived (a request admitted by one stack is served by the same one,
//! since its caller's team and account are positions in that stack's config). A swap builds a new
//! stack ([`crate::stack::build`]) from the new config: teams, tokens, quotas, routes, retry, dedup,
//! credentials, upstream settings and `log.level` change live; the quotas of unchanged teams and
//! accounts keep their state, and so do the dedup state and the upstream pool while what they
//! depend on is unchanged. Requests in flight finish on the stack they started on. What the
//! listeners were started with (`listen.*`) and the state backend cannot change live: a change is
//! logged as "restart needed for listen.proxy" and otherwise ignored.
//!
//! `idenfy_gateway_config_reloads_total{outcome}` counts reloads (`ok`, `invalid`, `error`), and
//! `idenfy_gateway_build_info{config_hash}` names the config in use (the first 12 hex digits of
//! the SHA-256 of the file).

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::{ArcSwap, Cache};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tower::Service;

use crate::body::Body;
use crate::config::{Config, LoadError, LoadOptions};
use crate::credentials::Credentials;
use crate::dedup::SessionEnds;
use crate::front::{Admission, Admit, Admitted};
use crate::identify::Callers;
use crate::stack::{App, Kept, Parts};

mod file;
pub use file::watch_config_file;

/// The proxy's service, always the current stack. Clones share the stack in use; each clone
/// (one per connection) keeps its own copy of the stack's handle, made again only after a
/// reload, instead of a copy per request (each layer holds `Arc`s: with the look-up, ~150
/// instructions a request, docs/benchmarks.md §6). Until its next request, a connection keeps
/// the stack it last used alive, as a request in flight does.
pub struct Live<A> {
    /// Where reloads put the current stack.
    swapped: Arc<ArcSwap<A>>,
    /// The current stack: one atomic load tells whether it changed since this clone looked.
    current: Cache<Arc<ArcSwap<A>>, Arc<A>>,
    /// The stack this clone last took a request with, and its handle. `admit` takes it up to
    /// date; `serve` uses it as it is, since it must serve a request with the stack that
    /// admitted it.
    stack: Option<(Arc<A>, A)>,
}

impl<A> Clone for Live<A> {
    fn clone(&self) -> Self {
        Live::new(Arc::clone(&self.swapped))
    }
}

impl<A> Live<A> {
    fn new(swapped: Arc<ArcSwap<A>>) -> Self {
        Live {
            current: Cache::new(Arc::clone(&swapped)),
            swapped,
            stack: None,
        }
    }
}

impl<A: Clone> Live<A> {
    /// The current stack's handle, made again only when a reload swapped the stack.
    fn current(&mut self) -> &mut A {
        let current = self.current.load();
        if !matches!(&self.stack, Some((of, _)) if Arc::ptr_eq(of, current)) {
            self.stack = None;
        }
        let (_, stack) = self
            .stack
            .get_or_insert_with(|| (Arc::clone(current), A::clone(current)));
        stack
    }
}

impl<A: App> Service<Request<Incoming>> for Live<A> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <A as Service<Request<Incoming>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The stack is always ready (front answers every request itself, see `Front::serve`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.current().call(req)
    }
}

impl<A: App> Admit for Live<A> {
    type Future = <A as Admit>::Future;

    fn admit<B>(&mut self, req: &mut Request<B>, declared: u64) -> Admission {
        self.current().admit(req, declared)
    }

    fn serve(&mut self, admitted: Admitted, req: Request<Bytes>) -> Self::Future {
        let stack = match &mut self.stack {
            Some((_, admitted_by)) => admitted_by,
            None => self.current(),
        };
        stack.serve(admitted, req)
    }
}

/// How one reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The new config is in use.
    Reloaded,
    /// The file is not a valid config (or cannot be read); the running config stays.
    Invalid,
    /// The config is valid but could not be put in use (a secret file vanished meanwhile); the
    /// running config stays.
    Failed,
    /// The gateway was not started from a file.
    NoSource,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Reloaded => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Failed | Outcome::NoSource => "error",
        }
    }
}

/// A reload, type-erased for [`crate::server::Running`].
pub trait Reload: Send + Sync {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
    /// A reload only when the file's content differs from the last one read (by any reload):
    /// `None` when it does not. What a watcher of the file calls, so that a change already
    /// reloaded by SIGHUP, a mere read or a touch reloads nothing.
    fn reload_if_changed(&self) -> Pin<Box<dyn Future<Output = Option<Outcome>> + Send + '_>>;
    /// Stops the watchers of token and secret files.
    fn stop(&self);
}

/// A config read for a reload, with its secrets and tokens.
struct Loaded {
    config: Config,
    hash: String,
    credentials: Credentials,
    callers: Callers,
}

/// Why a reload read nothing to swap in.
enum NotLoaded {
    /// The file is not a valid config (or cannot be read).
    Invalid(LoadError),
    /// The config is valid but its secrets could not be read meanwhile.
    Failed(anyhow::Error),
}

/// The config in use and what was built from it.
struct Generation {
    config: Config,
    kept: Kept,
    /// Stops this generation's watchers of token and secret files.
    stop: watch::Sender<bool>,
}

type Build<A> =
    fn(&Config, &Parts, Credentials, Callers, Option<&Kept>) -> anyhow::Result<(A, Kept)>;

/// Builds stacks from the config file and swaps them into a [`Live`].
pub struct Reloader<A> {
    path: Option<PathBuf>,
    current: Arc<ArcSwap<A>>,
    generation: tokio::sync::Mutex<Generation>,
    parts: Parts,
    credential_reloads: IntCounterVec,
    outcomes: IntCounterVec,
    build_info: IntGaugeVec,
    build: Build<A>,
    /// The hash of the file's content at the last read, valid or not ([`config_hash`]).
    last_read: std::sync::Mutex<String>,
}

/// The first 12 hex digits of the SHA-256 of the config file (`""` without a file).
pub fn config_hash(path: Option<&Path>) -> String {
    let bytes = path.and_then(|p| std::fs::read(p).ok()).unwrap_or_default();
    match path {
        Some(_) => hex::encode(&Sha256::digest(bytes)[..6]),
        None => String::new(),
    }
}

impl<A: App> Reloader<A> {
    /// Ends replay for a scanRef (a final webhook), in the dedup state of the running build.
    pub fn session_ends(&self) -> SessionEnds {
        self.parts.session_ends()
    }

    /// Builds the first stack from `config` (read from `path`, when there is one) and starts the
    /// watchers of its token and secret files. Registers the reload metrics and
    /// `idenfy_gateway_build_info` in `registry`.
    /// `build` is [`crate::stack::build`].
    pub fn start(
        config: Config,
        path: Option<PathBuf>,
        registry: &Registry,
        build: Build<A>,
        parts: Parts,
    ) -> anyhow::Result<(Live<A>, Arc<Self>)> {
        let credential_reloads = Credentials::register(registry)?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_config_reloads_total",
                "Config reloads (SIGHUP), by outcome: ok, invalid (the running config stays), error",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        for outcome in ["ok", "invalid", "error"] {
            outcomes.with_label_values(&[outcome]);
        }
        let build_info = crate::metrics::build_info(registry)?;
        let first_hash = config_hash(path.as_deref());
        crate::metrics::set_config_hash(&build_info, &first_hash);
        let credentials = Credentials::load_counting(&config.accounts, credential_reloads.clone())?;
        let callers = Callers::new(&config);
        let (app, kept) = build(&config, &parts, credentials.clone(), callers.clone(), None)?;
        let stop = watch_files(credentials, callers);
        let current = Arc::new(ArcSwap::from_pointee(app));
        let reloader = Arc::new(Reloader {
            path,
            current: current.clone(),
            generation: tokio::sync::Mutex::new(Generation { config, kept, stop }),
            parts,
            credential_reloads,
            outcomes,
            build_info,
            build,
            last_read: std::sync::Mutex::new(first_hash),
        });
        let live = Live::new(current);
        Ok((live, reloader))
    }

    /// Reads the config file again and swaps it in if it is valid.
    pub async fn reload_now(&self) -> Outcome {
        let outcome = self.reload_inner(false).await.unwrap_or(Outcome::Failed);
        self.outcomes.with_label_values(&[outcome.label()]).inc();
        outcome
    }

    /// [`reload_now`](Self::reload_now), only when the file's content changed since the last
    /// read; `None` (nothing counted) when it did not.
    pub async fn reload_if_changed(&self) -> Option<Outcome> {
        let outcome = self.reload_inner(true).await?;
        self.outcomes.with_label_values(&[outcome.label()]).inc();
        Some(outcome)
    }

    async fn reload_inner(&self, only_if_changed: bool) -> Option<Outcome> {
        let Some(path) = self.path.clone() else {
            tracing::warn!("config reload asked, but the gateway was not started from a file");
            return Some(Outcome::NoSource);
        };
        let mut generation = self.generation.lock().await;
        // Under the generation's lock: one reload at a time reads and compares.
        let last = self.last_read().clone();
        // Every file read off the runtime's workers: the config, then the secret and token
        // files it names.
        let (read, reloads) = (path.clone(), self.credential_reloads.clone());
        let read_back = tokio::task::spawn_blocking(move || {
            let hash = config_hash(Some(&read));
            if only_if_changed && hash == last {
                return None;
            }
            let loaded = load(&read, reloads, hash.clone());
            Some((hash, loaded))
        })
        .await;
        let (hash, loaded) = match read_back {
            Ok(Some(read)) => read,
            Ok(None) => return None,
            Err(_) => return Some(Outcome::Failed),
        };
        *self.last_read() = hash;
        Some(self.apply(&path, &mut generation, loaded))
    }

    fn last_read(&self) -> std::sync::MutexGuard<'_, String> {
        self.last_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Swaps in what a reload read, or says why not.
    fn apply(
        &self,
        path: &Path,
        generation: &mut Generation,
        loaded: Result<Loaded, NotLoaded>,
    ) -> Outcome {
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(NotLoaded::Invalid(error)) => {
                log_refused(path, &error);
                return Outcome::Invalid;
            }
            Err(NotLoaded::Failed(error)) => {
                let error = format!("{error:#}");
                tracing::warn!(file = %path.display(), %error, "config reload failed; the running config stays");
                return Outcome::Failed;
            }
        };
        let hash = loaded.hash.clone();
        match self.swap(generation, loaded) {
            Ok(()) => {
                crate::metrics::set_config_hash(&self.build_info, &hash);
                tracing::info!(file = %path.display(), config_hash = %hash, "config reloaded");
                Outcome::Reloaded
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::warn!(file = %path.display(), %error, "config reload failed; the running config stays");
                Outcome::Failed
            }
        }
    }

    /// Builds the stack of a loaded config and puts it in use.
    fn swap(&self, generation: &mut Generation, loaded: Loaded) -> anyhow::Result<()> {
        let Loaded {
            config,
            credentials,
            callers,
            ..
        } = loaded;
        let kept = Some(&generation.kept);
        let (app, kept) = (self.build)(
            &config,
            &self.parts,
            credentials.clone(),
            callers.clone(),
            kept,
        )?;
        for key in restart_needed(&generation.config, &config) {
            tracing::warn!(
                key,
                "restart needed for {key}: the running value stays until then"
            );
        }
        if config.log.level != generation.config.log.level {
            match crate::telemetry::set_level(&config.log.level) {
                Ok(true) => tracing::info!(level = %config.log.level, "log level changed"),
                Ok(false) => tracing::info!("log.level changed, but RUST_LOG sets the level"),
                Err(error) => tracing::warn!(%error, "log.level not applied"),
            }
        }
        self.current.store(Arc::new(app));
        let stop = watch_files(credentials, callers);
        let old = std::mem::replace(generation, Generation { config, kept, stop });
        let _ = old.stop.send(true);
        Ok(())
    }
}

impl<A: App> Reload for Reloader<A> {
    fn reload(&self) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(self.reload_now())
    }

    fn reload_if_changed(&self) -> Pin<Box<dyn Future<Output = Option<Outcome>> + Send + '_>> {
        Box::pin(Reloader::reload_if_changed(self))
    }

    fn stop(&self) {
        if let Ok(generation) = self.generation.try_lock() {
            let _ = generation.stop.send(true);
        }
    }
}

/// Reads the config at `path` (its content hashing to `hash`) with the secret and token files
/// it names.
fn load(path: &Path, reloads: IntCounterVec, hash: String) -> Result<Loaded, NotLoaded> {
    let config = Config::load_with(path, LoadOptions::default()).map_err(NotLoaded::Invalid)?;
    let credentials =
        Credentials::load_counting(&config.accounts, reloads).map_err(NotLoaded::Failed)?;
    let callers = Callers::new(&config);
    Ok(Loaded {
        hash,
        config,
        credentials,
        callers,
    })
}

/// Starts the watchers of `credentials`' secret files and `callers`' token files; they stop
/// when the returned sender sends `true` (or is dropped).
fn watch_files(credentials: Credentials, callers: Callers) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(credentials.watch(until(stopped.clone())));
    tokio::spawn(callers.watch(until(stopped)));
    stop
}

fn log_refused(path: &Path, error: &LoadError) {
    match error {
        LoadError::Invalid(errors) => {
            for e in &errors.0 {
                let line = e.location.map(|(l, _)| l);
                tracing::warn!(file = %path.display(), line, key = %e.path, problem = %e.message, "config reload refused: invalid config");
            }
        }
        unreadable => {
            tracing::warn!(file = %path.display(), error = %unreadable, "config reload refused");
        }
    }
    tracing::warn!(file = %path.display(), "config reload refused; the running config stays");
}

/// The keys whose change a running gateway cannot apply: what its listeners were started with,
/// and the state backend.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.listen, &new.listen);
    let keys = [
        ("listen.proxy", a.proxy != b.proxy),
        ("listen.admin", a.admin != b.admin),
        (
            "listen.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "listen.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "listen.body_read_timeout",
            a.body_read_timeout != b.body_read_timeout,
        ),
        ("listen.idle_timeout", a.idle_timeout != b.idle_timeout),
        (
            "listen.max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        ),
        (
            "listen.shutdown_grace",
            a.shutdown_grace != b.shutdown_grace,
        ),
        ("listen.tls_cert_file", a.tls != b.tls),
        ("listen.webhook", a.webhook != b.webhook),
        (
            "listen.webhook_tls_cert_file",
            a.webhook_tls != b.webhook_tls,
        ),
        // The webhook relay reads its settings, and the accounts' and teams' webhook keys and
        // endpoints, when it starts.
        (
            "webhooks",
            format!("{:?}", old.webhooks) != format!("{:?}", new.webhooks),
        ),
        ("state", old.state != new.state),
        ("log.format", old.log.format != new.log.format),
        // The span exporter is started once, with the gateway.
        (
            "telemetry.otlp_endpoint",
            old.telemetry.otlp != new.telemetry.otlp,
        ),
    ];
    let mut needed: Vec<&'static str> = keys.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
    // A listen key added later and not named above.
    if needed.iter().all(|k| !k.starts_with("listen.")) && format!("{a:?}") != format!("{b:?}") {
        needed.push("listen");
    }
    needed
}
