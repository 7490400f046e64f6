//! The gateway binary as a child process, for what only a process shows: exit codes, signals,
//! and everything it writes to its logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_idenfy-gateway");

pub struct GatewayProcess {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The webhook listener, when the config opens one.
    pub webhook: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl GatewayProcess {
    /// Starts `idenfy-gateway run --config FILE` with JSON logs and waits for its
    /// "gateway listening" line.
    pub fn start(config_file: &std::path::Path, envs: &[(&str, &str)]) -> GatewayProcess {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config_file)
            .args(["--log-format", "json"])
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("gateway listening") {
                    let _ = tx.send(line.clone());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("gateway reports its listeners");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        GatewayProcess {
            child,
            proxy: json["proxy"].as_str().unwrap().parse().unwrap(),
            admin: json["admin"].as_str().unwrap().parse().unwrap(),
            webhook: json["webhook"].as_str().and_then(|a| a.parse().ok()),
            log,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGHUP (reload the config).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until `needle` has been logged `times` times; the log.
    pub async fn wait_for_log(&self, needle: &str, times: usize) -> String {
        for _ in 0..1000 {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{needle:?} not logged {times} time(s):\n{}", self.log());
    }

    /// Waits for the process to exit; returns its exit code and everything it logged.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap().clone();
        (status.code(), log)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
