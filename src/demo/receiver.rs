//! The demo team's webhook endpoint: prints each delivery the gateway makes (event type, overall
//! status, whether the signature verifies with the team's key), so that finishing a session in
//! the demo shows the whole loop. Simulated data only; the body itself is never printed.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::webhooks::{IDENFY_SIGNATURE, X_GATEWAY_DELIVERY_ID};

/// The key the demo team verifies its deliveries with (a public demo value, not a secret).
pub const TEAM_WEBHOOK_KEY: &str = "demo-team-webhook-key";

/// Serves on `127.0.0.1:0` until dropped: the address, and the task.
pub async fn start() -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(receive);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

async fn receive(req: Request<Incoming>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let signed = crate::webhooks::signature::verify(
        TEAM_WEBHOOK_KEY.as_bytes(),
        &body,
        header(IDENFY_SIGNATURE).as_bytes(),
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let overall = json["status"]["overall"].as_str().unwrap_or("-");
    println!(
        "team \"demo\" received webhook {} (status {overall}, delivery {}): signature with the team's key {}",
        header("idenfy-event-type"),
        header(X_GATEWAY_DELIVERY_ID),
        if signed { "verifies" } else { "DOES NOT verify" },
    );
    let mut res = Response::new(Full::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    Ok(res)
}
