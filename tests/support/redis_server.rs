//! A `redis-server` of the test's own on a free loopback port: no persistence, killed on drop,
//! and able to be killed and started again on the same port (Redis gone mid-load, then back).
//!
//! A machine without `redis-server` skips the test with a notice; with
//! `IDENFY_GATEWAY_REQUIRE_DEPLOY_TOOLS=1` (set by `.ci/run`, which installs it) it fails instead.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    bin: PathBuf,
    port: u16,
    /// More arguments for `redis-server` (a password, a TLS port).
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits for its PING; `None` (after a notice) when redis-server is missing
    /// and not required.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(Vec::new())
    }

    /// [`start`](Self::start) with more arguments for `redis-server`.
    pub fn start_with(args: Vec<String>) -> Option<RedisServer> {
        let bin = crate::support::deploy::tool("redis-server")?;
        let mut server = RedisServer {
            bin,
            port: free_port(),
            args,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain connection, for the tests' own look at the keys.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("redis answers")
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        self.wait_for_ping();
    }

    fn wait_for_ping(&self) {
        let start = Instant::now();
        let client = redis::Client::open(self.url()).expect("a valid url");
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(mut conn) = client.get_connection() {
                // Up: a PONG, or a refusal for want of the password it was started with.
                let pong = redis::cmd("PING").query::<String>(&mut conn);
                if pong.is_ok() || pong.is_err_and(|e| e.code() == Some("NOAUTH")) {
                    return;
                }
            }
            // Startup has no signal to wait on but its answer.
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer PING in 10 s",
            self.port
        );
    }
}

/// A free loopback port: bound, read, released (redis-server binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
