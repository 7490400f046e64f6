//! Load benchmark of the whole gateway on loopback, with cargo alone: `cargo bench --bench proxy`.
//!
//! In one process, each on its own thread and runtime: a minimal upstream (hyper, answering like
//! the peer harness's nginx mock: a 417-byte token JSON on `POST /api/v2/token`, a status JSON on
//! `POST /api/v2/status`, 401 without the account's credentials), the gateway
//! (`server::start`, one worker: the sidecar's runtime, logs at info in JSON to a sink), and a
//! closed-loop load generator (hyper client, N keep-alive connections, fixed duration).
//!
//! Cases: direct (load → upstream) and through the gateway, for the status path (always
//! proxied) and the token path (1024 clientIds cycled: the gateway replays live tokens); and
//! `status-gateway-tls`, the status path through a second gateway serving TLS
//! (`listen.tls_cert_file`, the test fixture's P-256 certificate; one handshake per connection,
//! then keep-alive), for what TLS costs per request. Not in the default set. TLS connections
//! are served by hyper, not by the gateway's own HTTP/1.1 loop, so the difference to
//! `status-gateway` is TLS plus hyper's HTTP/1.1 in place of the loop's. Per
//! case: requests/s, p50/p99 latency, the gateway thread's CPU per request and the process's
//! peak resident memory (VmHWM, reset before each case).
//!
//! Environment (all optional): `PROXY_BENCH_SECS` (3) seconds per case, `PROXY_BENCH_CONNS`
//! (64) connections, `PROXY_BENCH_CASES` (all) comma-separated subset of
//! `status-direct,status-gateway,token-direct,token-gateway`, `PROXY_BENCH_TEAMS` (1) teams in
//! the gateway's config (the load uses the tokenless one), `PROXY_BENCH_LOG` (`sink`) `sink`,
//! `stderr` or `off`. Everything binds 127.0.0.1:0; every run is bounded by its duration.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use idenfy_gateway::config::{Config, LogFormat};
use tokio::net::{TcpListener, TcpStream};

/// The binary's allocator (see `main.rs`), so that the gateway here costs what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-api-key";
const SECRET: &str = "bench-api-secret";
/// `Basic base64(bench-api-key:bench-api-secret)`, what the upstream accepts.
const AUTH: &str = "Basic YmVuY2gtYXBpLWtleTpiZW5jaC1hcGktc2VjcmV0";
const TOKEN_BODY: &str = r#"{"message":"Token created successfully","authToken":"Xq7mZ2pLk9RwT4vN8bYc3sHdFgJ6uE1a","scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002","clientId":"user-0","firstName":null,"lastName":null,"successUrl":null,"errorUrl":null,"unverifiedUrl":null,"callbackUrl":null,"locale":"en","country":null,"expiryTime":3600,"sessionLength":600,"documents":[],"tokenType":"DOCUMENT","digitString":"87452193","showInstructions":true}"#;
const STATUS_BODY: &str = r#"{"fraudTags":[],"mismatchTags":[],"autoDocument":"DOC_VALIDATED","autoFace":"FACE_MATCH","manualDocument":"DOC_VALIDATED","manualFace":"FACE_MATCH","scanRef":"6b1f3c2e-9d4a-11ee-8c90-0242ac120002","clientId":"user-0","status":"APPROVED"}"#;
/// Distinct clientIds (or scanRefs) cycled by the load, like the peer harness's wrk script.
const IDS: usize = 1024;
/// Latency samples kept per connection (a bound on memory, not on the run).
const MAX_SAMPLES: usize = 1 << 20;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The upstream mock: static answers, checked credentials.
async fn upstream(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let authorized =
        req.headers().get("authorization").map(|v| v.as_bytes()) == Some(AUTH.as_bytes());
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let (status, body) = match (authorized, path.as_str()) {
        (false, _) => (StatusCode::UNAUTHORIZED, r#"{"identifier":"UNAUTHORIZED"}"#),
        (true, "/api/v2/token") => (StatusCode::OK, TOKEN_BODY),
        (true, "/api/v2/status") => (StatusCode::OK, STATUS_BODY),
        (true, _) => (StatusCode::NOT_FOUND, r#"{"identifier":"NOT_FOUND"}"#),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

/// Starts the upstream on its own thread; returns its address.
fn start_upstream() -> SocketAddr {
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
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper::service::service_fn(upstream),
                        )
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn gateway_config(upstream: SocketAddr, teams: usize, conns: usize) -> Config {
    // The default connection limit (4096) would leave the rest of a 10k-client run in the backlog.
    let max_connections = (conns + 64).max(4096);
    let mut text = format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nmax_connections = {max_connections}\n[upstream]\nurl = \"http://{upstream}\"\n\
         [[account]]\nname = \"main\"\napi_key = \"{KEY}\"\napi_secret = \"{SECRET}\"\nrate = \"100000000/h\"\nburst = 1000000\n\
         [[team]]\nname = \"app\"\nrate = \"1000000/s\"\nburst = 1000000\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
    );
    for i in 1..teams {
        text.push_str(&format!(
            "[[team]]\nname = \"team-{i}\"\ntoken = \"team-token-{i:08}\"\nrate = \"1000000/s\"\nburst = 1000000\n"
        ));
    }
    Config::parse(&text, &|_| None).expect("bench config is valid")
}

/// `config` serving TLS with the test fixture's certificate.
fn tls_config(mut config: Config) -> Config {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    config.listen.tls = Some(idenfy_gateway::config::Tls {
        cert_file: fixtures.join("localhost.pem"),
        key_file: fixtures.join("localhost.key"),
        client_ca_file: None,
    });
    config
}

/// The gateway on its own thread, on the runtime `main.rs` gives a one-worker sidecar.
struct Gateway {
    addr: SocketAddr,
    handle: tokio::runtime::Handle,
}

fn start_gateway(config: Config) -> Gateway {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let running = idenfy_gateway::server::start(config).await.unwrap();
            tx.send((running.proxy_addr, tokio::runtime::Handle::current()))
                .unwrap();
            std::future::pending::<()>().await;
        });
    });
    let (addr, handle) = rx.recv().unwrap();
    Gateway { addr, handle }
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/stat`.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // The kernel reports in USER_HZ, 100 per second on Linux.
    Duration::from_millis(ticks * 10)
}

impl Gateway {
    /// The gateway thread's CPU time so far.
    fn cpu(&self) -> Duration {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(thread_cpu());
        });
        rx.recv().unwrap_or_default()
    }
}

/// `VmHWM` (peak resident memory) of this process in KiB; 0 when unknown.
pub fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS, so each case reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// A TLS client trusting the test fixture certificate (HTTP/1.1 by ALPN).
fn tls_client() -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = format!(
        "{}/tests/fixtures/localhost.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(pem).expect("fixture") {
        roots.add(cert.expect("fixture")).expect("fixture");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 connection to `target`, over TLS with `tls`.
async fn open(
    target: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(target).await.expect("connect");
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            send
        }
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
            let stream = tls.connect(name, stream).await.expect("TLS handshake");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            send
        }
    }
}

/// One connection's closed loop until `stop`: send, read the whole answer, record.
async fn connection(
    target: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    path: &'static str,
    auth: &'static str,
    first: usize,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut send = open(target, tls).await;
    let field = if path.contains("status") {
        "scanRef"
    } else {
        "clientId"
    };
    let bodies: Vec<Bytes> = (0..IDS)
        .map(|i| Bytes::from(format!(r#"{{"{field}":"user-{i}"}}"#)))
        .collect();
    let started = Instant::now();
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let req = Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("authorization", auth)
            .body(Full::new(bodies[i % IDS].clone()))
            .unwrap();
        i += 1;
        let sent = Instant::now();
        let ok = match send.send_request(req).await {
            Ok(res) => {
                let ok = res.status().is_success();
                res.into_body().collect().await.is_ok() && ok
            }
            Err(_) => false,
        };
        if !ok {
            out.errors += 1;
            if send.ready().await.is_err() {
                break;
            }
            continue;
        }
        out.requests += 1;
        if out.latencies_us.len() < MAX_SAMPLES {
            let us = sent.elapsed().as_micros();
            out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
    out.elapsed = started.elapsed();
    out
}

/// Runs `conns` connections against `target` for `secs` seconds on a load-generator runtime.
fn load(
    target: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    path: &'static str,
    auth: &'static str,
    conns: usize,
    secs: f64,
) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let tls = tls.clone();
                tokio::spawn(connection(target, tls, path, auth, c * 16, stop.clone()))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut total = Outcome {
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        };
        for task in tasks {
            let o = task.await.expect("connection task");
            total.requests += o.requests;
            total.errors += o.errors;
            total.elapsed = total.elapsed.max(o.elapsed);
            total.latencies_us.extend(o.latencies_us);
        }
        total
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[at]) / 1000.0
}

struct Row {
    name: String,
    rps: f64,
    p50: f64,
    p99: f64,
    cpu_us: Option<f64>,
    peak_mib: f64,
    errors: u64,
}

fn run_case(
    name: &str,
    target: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
    path: &'static str,
    auth: &'static str,
    gw: Option<&Gateway>,
) -> Row {
    let conns = env("PROXY_BENCH_CONNS", 64usize);
    let secs = env("PROXY_BENCH_SECS", 3.0f64);
    // Warm-up: connection pools, replay store, allocator.
    let _ = load(
        target,
        tls.clone(),
        path,
        auth,
        conns,
        (secs / 4.0).min(1.0),
    );
    reset_peak_rss();
    let cpu_before = gw.map(Gateway::cpu);
    let mut out = load(target, tls, path, auth, conns, secs);
    let cpu = gw
        .zip(cpu_before)
        .map(|(g, before)| g.cpu().saturating_sub(before));
    out.latencies_us.sort_unstable();
    let requests = out.requests.max(1) as f64;
    Row {
        name: name.to_string(),
        rps: out.requests as f64 / out.elapsed.as_secs_f64(),
        p50: percentile(&out.latencies_us, 0.50),
        p99: percentile(&out.latencies_us, 0.99),
        cpu_us: cpu.map(|c| c.as_secs_f64() * 1e6 / requests),
        peak_mib: peak_rss_kib() as f64 / 1024.0,
        errors: out.errors,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a quick
    // exit: only run the load when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _logs = match std::env::var("PROXY_BENCH_LOG").as_deref() {
        Ok("off") => None,
        Ok("stderr") => Some(idenfy_gateway::telemetry::init(LogFormat::Json, "info")),
        _ => Some(idenfy_gateway::telemetry::init_to(
            LogFormat::Json,
            "info",
            Box::new(std::io::sink()),
        )),
    };
    let cases = std::env::var("PROXY_BENCH_CASES")
        .unwrap_or_else(|_| "status-direct,status-gateway,token-direct,token-gateway".into());
    let up = start_upstream();
    let teams = env("PROXY_BENCH_TEAMS", 1usize);
    let conns = env("PROXY_BENCH_CONNS", 64usize);
    let gw = start_gateway(gateway_config(up, teams, conns));
    let idle_rss = status_field("VmRSS:") as f64 / 1024.0;
    let mut rows = Vec::new();
    for case in cases.split(',') {
        let row = match case.trim() {
            "status-direct" => run_case(case, up, None, "/api/v2/status", AUTH, None),
            "status-gateway" => {
                let auth = "Basic Ym9ndXM=";
                run_case(case, gw.addr, None, "/api/v2/status", auth, Some(&gw))
            }
            "status-gateway-tls" => {
                let tls_gw = start_gateway(tls_config(gateway_config(up, teams, conns)));
                let (auth, client) = ("Basic Ym9ndXM=", Some(tls_client()));
                run_case(
                    case,
                    tls_gw.addr,
                    client,
                    "/api/v2/status",
                    auth,
                    Some(&tls_gw),
                )
            }
            "token-direct" => run_case(case, up, None, "/api/v2/token", AUTH, None),
            "token-gateway" => {
                let auth = "Basic Ym9ndXM=";
                run_case(case, gw.addr, None, "/api/v2/token", auth, Some(&gw))
            }
            other => {
                eprintln!("unknown case {other:?}");
                continue;
            }
        };
        rows.push(row);
    }
    println!(
        "\nproxy bench: {} connections, {} s per case, {} team(s); process RSS after start {:.1} MiB",
        env("PROXY_BENCH_CONNS", 64usize),
        env("PROXY_BENCH_SECS", 3.0f64),
        teams,
        idle_rss
    );
    println!(
        "{:<16} {:>10} {:>8} {:>8} {:>12} {:>10} {:>7} {:>9}",
        "case", "req/s", "p50 ms", "p99 ms", "gw CPU us/req", "peak MiB", "errors", "rps/direct"
    );
    for row in &rows {
        let path = row.name.split('-').next().unwrap_or("");
        let direct = rows
            .iter()
            .find(|r| r.name == format!("{path}-direct"))
            .map(|r| r.rps);
        println!(
            "{:<16} {:>10.0} {:>8.3} {:>8.3} {:>12} {:>10.1} {:>7} {:>9}",
            row.name,
            row.rps,
            row.p50,
            row.p99,
            row.cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
            row.peak_mib,
            row.errors,
            direct.map_or("-".into(), |d| format!("{:.3}", row.rps / d)),
        );
    }
}
