//! The proxy listener's real connection loop, over loopback: a gateway (in front of the
//! simulator) is started once; each input is written in its pieces to a fresh connection, whose
//! write side is then shut, and what the gateway answers is read until it closes. The gateway
//! must close that connection in bounded time, answer in HTTP/1.x, never panic, and still serve
//! a good request afterwards.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use idenfy_gateway::config::Config;
use idenfy_gateway::server::Running;
use idenfy_gateway::simulator::{Simulator, SimulatorConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET};
use idenfy_gateway_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Longest wait for the gateway to close a connection whose client stopped sending: far over
/// anything the loop does with a half-closed connection (it reads EOF at once), with room
/// for a loaded machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// A good request, with the team's token: the simulator answers it (404, unknown scanRef).
const PROBE: &[u8] = b"POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n\
    authorization: Bearer fuzz-token\r\ncontent-length: 18\r\nconnection: close\r\n\r\n\
    {\"scanRef\":\"none\"}";

struct Harness {
    runtime: Runtime,
    proxy: SocketAddr,
    _simulator: Simulator,
    _gateway: Running,
}

fn config(upstream: &str) -> Config {
    let text = format!(
        r#"
[listen]
proxy = "127.0.0.1:0"
admin = "127.0.0.1:0"
header_read_timeout = "1s"
body_read_timeout = "1s"
max_header_bytes = "4KiB"
shutdown_grace = "1s"

[upstream]
url = "{upstream}"
connect_timeout = "1s"
attempt_timeout = "2s"
deadline = "3s"

[[account]]
name = "sim"
api_key = "{DEFAULT_API_KEY}"
api_secret = "{DEFAULT_API_SECRET}"
rate = "10000/s"
burst = 10000

[[team]]
name = "fuzz"
token = "fuzz-token"
rate = "10000/s"
burst = 10000

[limits]
max_body = "64KiB"

[log]
format = "human"
level = "error"
"#
    );
    Config::parse(&text, &|_| None).expect("the harness config is valid")
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (simulator, gateway) = runtime.block_on(async {
            let simulator = Simulator::start(SimulatorConfig {
                hourly_limit: 0,
                max_sessions: 1000,
                ..SimulatorConfig::default()
            })
            .await
            .expect("simulator starts");
            let gateway = idenfy_gateway::server::start(config(&simulator.url()))
                .await
                .expect("gateway starts");
            (simulator, gateway)
        });
        Harness {
            runtime,
            proxy: gateway.proxy_addr,
            _simulator: simulator,
            _gateway: gateway,
        }
    })
}

/// Writes `pieces` one by one (letting the gateway run between them), shuts the write side, and
/// reads everything the gateway sends until it closes.
async fn exchange<'a>(proxy: SocketAddr, pieces: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let stream = TcpStream::connect(proxy)
        .await
        .expect("the gateway accepts");
    stream.set_nodelay(true).expect("nodelay");
    let (mut rd, mut wr) = stream.into_split();
    let write = async move {
        for piece in pieces {
            if wr.write_all(piece).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        let _ = wr.shutdown().await;
    };
    let read = async move {
        let mut got = Vec::new();
        let read = tokio::time::timeout(CLOSE_WITHIN, rd.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "the gateway kept a half-closed connection open"
        );
        got
    };
    tokio::join!(write, read).1
}

/// The HTTP/2 connection preface: after it, hyper answers in HTTP/2 frames (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the gateway sent is HTTP/1.x responses (at least a whole first head), or HTTP/2 frames
/// when the client opened with the HTTP/2 preface.
fn check_answer(sent: &[u8], got: &[u8]) {
    if got.is_empty() {
        return;
    }
    if !got.starts_with(b"HTTP/") && sent.starts_with(H2_PREFACE) {
        return;
    }
    let mut lines = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut lines);
    let parsed = res.parse(got);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(_))),
        "not an HTTP/1.x answer: {:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
}

/// The gateway still serves: the probe goes through to the simulator and back.
async fn probe(proxy: SocketAddr) {
    let got = exchange(proxy, std::iter::once(PROBE)).await;
    let mut lines = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut lines);
    assert!(
        matches!(res.parse(&got), Ok(httparse::Status::Complete(_))),
        "no answer to the probe"
    );
    let by_gateway = res
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("x-gateway-error"));
    assert!(
        !by_gateway,
        "the gateway refused a good request: {:?}",
        String::from_utf8_lossy(&got)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let harness = harness();
    harness.runtime.block_on(async {
        let got = exchange(harness.proxy, input.pieces()).await;
        check_answer(input.payload, &got);
        probe(harness.proxy).await;
    });
});
