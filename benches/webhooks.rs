//! Webhook acknowledgement latency: `cargo bench --bench webhooks`.
//!
//! In one process, each on its own thread and runtime: the gateway (`server::start`, two
//! workers, its webhook listener and the redb store in a temporary directory), a team endpoint
//! (hyper, 204 at once) or none (a bound port that refuses connections: the receiver down), and an
//! open-loop load generator posting signed iDenfy webhooks (a 2 KiB KYC payload, one scanRef
//! each) at a fixed rate over keep-alive connections. Latency is measured per webhook from the
//! moment it is due to its 200, so a gateway that falls behind shows it. Prints p50, p99 and max
//! per case, and what the queue did.
//!
//! Environment (optional): `WEBHOOK_BENCH_RATE` (200) webhooks/s, `WEBHOOK_BENCH_SECS` (10)
//! seconds per case; `WEBHOOK_BENCH_BACKEND=redis` stores the queue in Redis (fleet mode)
//! instead: a `redis-server` of the bench's own on a free port, with `appendonly yes` and
//! `appendfsync` from `WEBHOOK_BENCH_REDIS_FSYNC` (`always`, the durability of the redb store;
//! or `everysec`). Everything binds 127.0.0.1; every run is bounded by its duration.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idenfy_gateway::config::Config;
use idenfy_gateway::webhooks::sign;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNT_KEY: &str = "bench-account-webhook-key";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A team endpoint answering 204 at once, on its own thread.
fn receiver() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                        let mut res = Response::new(Full::<Bytes>::default());
                        *res.status_mut() = StatusCode::NO_CONTENT;
                        Ok::<_, Infallible>(res)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// A `redis-server` on a free port with an append-only file fsynced as `fsync` says, in `dir`;
/// killed when the bench exits. Its URL.
fn redis_server(dir: &std::path::Path, fsync: &str) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", fsync])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) starts");
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).unwrap();
    for _ in 0..500 {
        if let Ok(mut conn) = client.get_connection() {
            if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                return (child, url);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not answer");
}

/// The gateway on its own thread (it lives until the bench exits): its webhook URL and admin URL.
/// `state`: the `[state]` lines (empty: the memory backend, the queue in `dir`).
fn gateway(team_url: &str, dir: &std::path::Path, state: &str) -> (String, String) {
    let text = format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
webhook = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[[account]]
name = "main"
api_key = "k"
api_secret = "s"
webhook_key = "{ACCOUNT_KEY}"
[[team]]
name = "payments"
token = "t"
webhook_url = "{team_url}/hook"
webhook_key = "bench-team-key"
[webhooks]
dir = "{dir}"
unknown = "payments"
retry_base = "1s"
retry_cap = "5s"
[log]
format = "human"
level = "error"
{state}
"#,
        dir = dir.display()
    );
    let config = Config::parse(&text, &|_| None).expect("bench config");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let running = idenfy_gateway::server::start(config).await.unwrap();
            let hook = running.webhook_addr.unwrap();
            tx.send((
                format!("http://{hook}/webhooks/idenfy/main"),
                format!("http://{}", running.admin_addr),
            ))
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn payload(i: u64) -> String {
    let filler = "x".repeat(1500);
    format!(
        r#"{{"final":true,"platform":"PC","status":{{"overall":"APPROVED","fraudTags":[],"mismatchTags":[],"autoFace":"FACE_MATCH","manualFace":"FACE_MATCH","autoDocument":"DOC_VALIDATED","manualDocument":"DOC_VALIDATED"}},"data":{{"docFirstName":"JOHN","docLastName":"DOE","note":"{filler}"}},"fileUrls":{{}},"scanRef":"bench-{i:08}","clientId":"user-{i}","startTime":1700000000,"finishTime":1700000100}}"#
    )
}

struct Case {
    p50: Duration,
    p99: Duration,
    max: Duration,
    sent: usize,
    failed: usize,
}

async fn load(url: &str, rate: u64, secs: u64) -> Case {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let body = payload(i);
        let signature = sign(ACCOUNT_KEY.as_bytes(), body.as_bytes());
        let req = Request::post(url)
            .header("content-type", "application/json")
            .header("idenfy-event-type", "IDENTIFICATION_MANUAL_FINISHED")
            .header("idenfy-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let sent = client.request(req);
        tasks.push(tokio::spawn(async move {
            let ok = matches!(sent.await, Ok(res) if res.status() == StatusCode::OK);
            (due.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for task in tasks {
        let (latency, ok) = task.await.unwrap();
        failed += usize::from(!ok);
        latencies.push(latency);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Case {
        p50: at(0.50),
        p99: at(0.99),
        max: *latencies.last().unwrap(),
        sent: latencies.len(),
        failed,
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn admin_metrics(admin: &str) -> String {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = client
        .get(format!("{admin}/metrics").parse().unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn main() {
    let rate = env("WEBHOOK_BENCH_RATE", 200);
    let secs = env("WEBHOOK_BENCH_SECS", 10);
    let up = receiver();
    let down_socket = tokio::net::TcpSocket::new_v4().unwrap();
    down_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down = format!("http://{}", down_socket.local_addr().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = match std::env::var("WEBHOOK_BENCH_BACKEND").as_deref() {
        Ok("redis") => {
            let fsync = std::env::var("WEBHOOK_BENCH_REDIS_FSYNC").unwrap_or("always".into());
            println!("queue in Redis (appendfsync {fsync})");
            Some(redis_server(redis_dir.path(), &fsync))
        }
        _ => None,
    };
    println!("| receiver | webhooks/s | sent | failed | p50 | p99 | max | delivered | queued at the end |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, team_url) in [("up", up.as_str()), ("down", down.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let state = match &redis {
            // A prefix per case: the second does not see the first's queue.
            Some((_, url)) => format!(
                "[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\ntimeout = \"500ms\"\nkey_prefix = \"bench-{name}:\"\n"
            ),
            None => String::new(),
        };
        let (hook, admin) = gateway(team_url, dir.path(), &state);
        let case = rt.block_on(load(&hook, rate, secs));
        let text = rt.block_on(admin_metrics(&admin));
        println!(
            "| {name} | {rate} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | {:.0} |",
            case.sent,
            case.failed,
            case.p50.as_secs_f64() * 1e3,
            case.p99.as_secs_f64() * 1e3,
            case.max.as_secs_f64() * 1e3,
            metric(&text, "idenfy_gateway_webhooks_delivered_total") + 0.0,
            metric(&text, "idenfy_gateway_webhooks_queue_depth") + 0.0,
        );
    }
    drop(down_socket);
    if let Some((mut child, _)) = redis {
        let _ = child.kill();
        let _ = child.wait();
    }
}
