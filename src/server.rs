//! The listeners: accept connections (bounded), serve HTTP/1.1 and h2c with header limits, a
//! header-read timeout and an idle timeout, and shut down gracefully.
//!
//! [`start`] binds both listeners and serves in the background; [`Running::shutdown`] stops
//! accepting, lets in-flight requests finish within `listen.shutdown_grace`, then returns.
//! The proxy listener serves plain HTTP/1.1 requests with its own loop ([`h1`]) and hands
//! everything else to hyper; the admin listener is hyper's. At `listen.max_connections` the
//! proxy listener closes its longest-idle connection to admit a new one ([`slots`]); the admin
//! listener lets new ones wait in the backlog. With `listen.tls_cert_file`, the proxy listener
//! speaks TLS ([`crate::tls`]): HTTP/1.1 on its own loop as over plain TCP, h2 (by ALPN) with
//! hyper; with `listen.webhook_tls_cert_file`, the webhook listener (hyper's) speaks TLS too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::config::{Config, Listen, Tls};
use crate::reload::{Outcome, Reload, Reloader};
use crate::stack::{App, Parts};
use crate::tls::{ClientCert, TlsFiles};
use crate::webhooks::{HttpTransport, Webhooks};

mod h1;
mod slots;

/// A gateway serving in the background.
pub struct Running {
    /// Where the proxy listens (the real port when the config said `:0`).
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// Where iDenfy's webhooks are received (`listen.webhook`), if anywhere.
    pub webhook_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<()>,
    /// Stopped last: `/readyz` answers 503 and `/metrics` stays up while the proxy drains.
    admin_stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    reloader: Arc<dyn Reload>,
    /// Flushed last, once every request's span has ended.
    #[cfg(feature = "otlp")]
    spans: Option<crate::telemetry::otlp::Spans>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to the grace period), and returns.
    pub async fn shutdown(self) {
        self.reloader.stop();
        let _ = self.stop.send(true);
        let _ = self.proxy_task.await;
        let _ = self.admin_stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        #[cfg(feature = "otlp")]
        if let Some(spans) = self.spans {
            spans.shutdown().await;
        }
    }

    /// Reads the config file again and swaps it in if it is valid ([`crate::reload`]).
    pub async fn reload(&self) -> Outcome {
        self.reloader.reload().await
    }
}

/// Builds the gateway from a validated config, binds its listeners and serves in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with(config, None).await
}

/// [`start`], with `config` read from `path`: [`Running::reload`] reads it again.
pub async fn start_from(path: PathBuf, config: Config) -> anyhow::Result<Running> {
    start_with(config, Some(path)).await
}

async fn start_with(config: Config, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let registry = crate::metrics::registry()?;
    let parts = Parts::new(&registry)?.with_state(&config.state, &registry)?;
    let mut webhooks = match config.listen.webhook {
        Some(_) => Some(Webhooks::open(&config, &registry, parts.shared_state())?),
        None => None,
    };
    let parts = parts.observed_by(webhooks.as_ref().map(Webhooks::route_book));
    // What the webhook listener needs of the config (account keys, teams' endpoints) is read at
    // start: a reload does not change it ("restart needed for listen.webhook").
    let webhook_config = webhooks.as_ref().map(|_| config.clone());
    let listen = config.listen.clone();
    let upstream_url = config.upstream.url.clone();
    let file = path.clone();
    #[cfg(feature = "otlp")]
    let spans = match &config.telemetry.otlp {
        Some(otlp) => Some(crate::telemetry::otlp::Spans::start(otlp)?),
        None => None,
    };
    #[cfg(feature = "otlp")]
    let parts = parts.exporting(spans.clone());
    let (app, reloader) = Reloader::start(config, path, &registry, crate::stack::build, parts)?;
    let ready = Arc::new(AtomicBool::new(false));

    let tls = tls_files(listen.tls.as_ref(), ClientCert::Optional)?;
    let webhook_tls = tls_files(listen.webhook_tls.as_ref(), ClientCert::Required)?;
    let proxy = TcpListener::bind(listen.proxy)
        .await
        .with_context(|| format!("cannot listen on listen.proxy {}", listen.proxy))?;
    let admin_listener = TcpListener::bind(listen.admin)
        .await
        .with_context(|| format!("cannot listen on listen.admin {}", listen.admin))?;
    let (stop, stop_signal) = watch::channel(false);
    let (admin_stop, admin_stop_signal) = watch::channel(false);
    let (proxy_addr, admin_addr) = (proxy.local_addr()?, admin_listener.local_addr()?);

    let admin = Admin {
        registry,
        ready: ready.clone(),
        webhooks: webhooks.as_ref().map(Webhooks::dead_letters),
    };
    let mut tasks = Vec::new();
    let mut webhook_addr = None;
    if let (Some(w), Some(config)) = (webhooks.as_mut(), webhook_config.as_ref()) {
        let addr = listen.webhook.unwrap_or(listen.proxy);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on listen.webhook {addr}"))?;
        webhook_addr = Some(listener.local_addr()?);
        let intake = w.intake(config, reloader.session_ends());
        let queue = w.queue(config, Arc::new(HttpTransport::new()));
        tasks.extend(w.spawn(queue, stop_signal.clone()));
        let service = hyper::service::service_fn(move |req| {
            let intake = Arc::clone(&intake);
            async move { Ok::<_, std::convert::Infallible>(intake.handle(req).await) }
        });
        tasks.push(tokio::spawn(serve(
            listener,
            service,
            webhook_tls.clone(),
            listen.clone(),
            stop_signal.clone(),
        )));
    }
    let limits = h1::Limits {
        max_head: listen.max_header_bytes,
    };
    let timeouts = h1::Timeouts {
        header_read: listen.header_read_timeout,
        body_read: listen.body_read_timeout,
        idle: listen.idle_timeout,
    };
    for files in tls.iter().chain(&webhook_tls) {
        let mut stop_rx = stop_signal.clone();
        tokio::spawn(
            files
                .clone()
                .watch(async move { stopped(&mut stop_rx).await }),
        );
    }
    if let Some(file) = file {
        // Besides SIGHUP: a change of the file's content reloads it.
        let mut stop_rx = stop_signal.clone();
        let shutdown = async move { stopped(&mut stop_rx).await };
        let reloader: Arc<dyn Reload> = reloader.clone();
        tokio::spawn(crate::reload::watch_config_file(file, reloader, shutdown));
    }
    let server = h1::Server::new(app, limits, timeouts, builder(&listen));
    let proxy_task = tokio::spawn(serve_proxy(
        proxy,
        Arc::new(server),
        tls,
        listen.clone(),
        stop_signal.clone(),
    ));
    let admin_task = tokio::spawn(serve(
        admin_listener,
        admin.service(),
        None,
        listen,
        admin_stop_signal,
    ));
    let mut stop_rx = stop_signal;
    let readiness = tokio::spawn(async move {
        ready.store(true, Ordering::Release);
        stopped(&mut stop_rx).await;
        ready.store(false, Ordering::Release);
    });
    tasks.extend([admin_task, readiness]);
    let webhook = webhook_addr.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, webhook = %webhook, upstream = %upstream_url, "gateway listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        webhook_addr,
        stop,
        proxy_task,
        admin_stop,
        tasks,
        reloader,
        #[cfg(feature = "otlp")]
        spans,
    })
}

/// hyper's server, for the admin listener and the connections the proxy's loop hands over. Its
/// HTTP/1 header timer starts as soon as a connection goes idle, so it bounds idle keep-alive
/// connections too.
fn builder(listen: &Listen) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listen.header_read_timeout)
        .max_buf_size(listen.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(listen.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The proxy listener: serves until `stop` turns true, then drains connections for at most the
/// grace period. With `tls`, each connection's handshake comes first ([`tls_connection`]).
async fn serve_proxy<S: App>(
    listener: TcpListener,
    server: Arc<h1::Server<S>>,
    tls: Option<Arc<TlsFiles>>,
    listen: Listen,
    mut stop: watch::Receiver<bool>,
) {
    let slots = slots::Slots::new(listen.max_connections);
    while let Some(stream) = accept(&listener, &mut stop).await {
        let accepted = Instant::now();
        // Accepted first, then given a slot: at the limit, the connection idle for longest is
        // closed to make room, and only when a new one is really waiting.
        let ticket = tokio::select! {
            ticket = slots.acquire() => ticket,
            _ = stopped(&mut stop) => break,
        };
        let (server, stop) = (server.clone(), stop.clone());
        match &tls {
            None => tokio::spawn(server.serve_connection(stream, accepted, ticket, stop)),
            Some(tls) => tokio::spawn(tls_connection(
                server,
                tls.acceptor(),
                stream,
                accepted,
                ticket,
                stop,
            )),
        };
    }
    drop(listener);
    // Each connection holds its slot until its socket closes: every slot back, every
    // connection drained.
    drain(&listen, slots.all_free()).await;
}

/// A TLS connection of the proxy listener: the handshake (with the certificate current now),
/// due with the first head within `listen.header_read_timeout` of accept, and cut short by
/// eviction or `stop` as an idle connection is; then h2 (ALPN) to hyper, and HTTP/1.1 (ALPN
/// `http/1.1` or none) to the server's own loop.
async fn tls_connection<S: App>(
    server: Arc<h1::Server<S>>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    accepted: Instant,
    ticket: slots::Ticket,
    mut stop: watch::Receiver<bool>,
) {
    let due = accepted + server.header_read_timeout();
    let handshake = tokio::select! {
        handshake = tokio::time::timeout_at(due, acceptor.accept(stream)) => handshake,
        () = ticket.slot().evicted() => return,
        _ = stopped(&mut stop) => return,
    };
    let Ok(Ok(stream)) = handshake else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        server.serve_h2(stream, ticket, stop).await;
    } else {
        server
            .serve_connection(stream, accepted, ticket, stop)
            .await;
    }
}

/// The admin and webhook listeners: serve with hyper (behind TLS with `tls`) until `stop`
/// turns true, then drain connections for at most the grace period.
async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    tls: Option<Arc<TlsFiles>>,
    listen: Listen,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(&listen));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(listen.max_connections));
    while let Some((stream, permit)) = accept_within(&listener, &connections, &mut stop).await {
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        let Some(tls) = &tls else {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
            continue;
        };
        let (acceptor, handshake_timeout) = (tls.acceptor(), listen.header_read_timeout);
        tokio::spawn(async move {
            // The handshake within the header timeout, with the certificate current now.
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
            if let Ok(Ok(stream)) = handshake.await {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let _ = watcher.watch(conn.into_owned()).await;
            }
            drop(permit);
        });
    }
    drop(listener);
    drain(&listen, graceful.shutdown()).await;
}

/// A listener's certificate files, read once (the error names the file), if it has TLS.
fn tls_files(tls: Option<&Tls>, client: ClientCert) -> anyhow::Result<Option<Arc<TlsFiles>>> {
    tls.map(|tls| TlsFiles::load(tls, client)).transpose()
}

/// A connection slot, then the next connection in it; `None` once `stop` turns true. The slot is
/// taken before accepting: over the limit, clients wait in the backlog.
async fn accept_within(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        permit = connections.clone().acquire_owned() => permit.expect("semaphore never closed"),
        _ = stopped(stop) => return None,
    };
    Some((accept(listener, stop).await?, permit))
}

/// The next connection; `None` once `stop` turns true.
async fn accept(listener: &TcpListener, stop: &mut watch::Receiver<bool>) -> Option<TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(stop) => return None,
        }
    }
}

/// Waits for `drained`, at most the grace period.
async fn drain<T>(listen: &Listen, drained: impl std::future::Future<Output = T>) {
    if tokio::time::timeout(listen.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?listen.shutdown_grace, "shutdown grace period over; closing remaining connections");
    }
}

/// Resolves once the stop flag is set.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs the gateway from the config file at `path` until `signal` resolves, then shuts down
/// gracefully. SIGHUP reloads the file ([`crate::reload`]).
pub async fn run_from(
    path: PathBuf,
    config: Config,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Handled before the listeners open: SIGHUP's default action ends the process.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let running = start_from(path, config).await?;
    tokio::pin!(signal);
    loop {
        #[cfg(unix)]
        let hangup = hangups.recv();
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut signal => break,
            Some(()) = hangup => {
                tracing::info!("SIGHUP: reloading the config");
                running.reload().await;
            }
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the gateway until `signal` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config).await?;
    signal.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
