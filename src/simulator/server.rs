//! The simulator's listener: HTTP/1.1 (keep-alive) and h2c on one port, each request read whole
//! and sent to the control API or the iDenfy API; graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::api::{self, Dropped};
use super::control;
use super::reply::{self, Reply};
use super::state::Shared;

/// Largest request body read (iDenfy's own limit for direct processing is 20 MB).
const MAX_BODY: usize = 20 * 1024 * 1024;
/// How long shutdown waits for open connections.
const GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` changes or its sender is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: let the condition pass.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |req| handle(shared.clone(), req));
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // A dropped connection ends in an error on purpose; nothing to report.
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Reply, Dropped> {
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(reply::message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body is too large.",
            ));
        }
        Err(_) => return Err(Dropped),
    };
    if parts.uri.path().starts_with("/__sim/") {
        return Ok(control::handle(&shared, &parts, &body).await);
    }
    api::handle(&shared, parts, body).await
}
