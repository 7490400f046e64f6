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
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits for its PING; `None` (after a notice) when redis-server is missing
    /// and not required.
    pub fn start() -> Option<RedisServer> {
        let bin = crate::support::deploy::tool("redis-server")?;
        // A free port: bound, read, released (redis-server binds it a moment later).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = RedisServer {
            bin,
            port,
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        server.restart();
        Some(server)
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
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
