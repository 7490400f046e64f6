//! `idenfy-gateway demo`: the iDenfy simulator and the gateway in front of it, on loopback, with
//! the configuration in `config/demo.toml`, so a newcomer can try everything with curl.
//!
//! The whole webhook loop runs too: the simulator sends its signed webhooks to the gateway's
//! webhook listener (on an ephemeral port), which delivers them to a demo team endpoint
//! ([`receiver`]) that prints what it got. The queue lives in a directory of its own under the
//! system's temporary directory, removed at shutdown.

mod receiver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::server::Running;
use crate::simulator::{Simulator, SimulatorConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET};

/// The demo's configuration, as shipped in `config/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Where the demo listens.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub simulator: SocketAddr,
}

/// The simulator's webhook signing key in the demo (a public demo value, not a secret).
pub const DEMO_WEBHOOK_KEY: &str = "demo-webhook-key";

/// The running demo.
pub struct Demo {
    pub simulator: Simulator,
    pub gateway: Running,
    receiver: tokio::task::JoinHandle<()>,
    dir: PathBuf,
}

impl Demo {
    /// Starts the simulator, then the gateway in front of it.
    pub async fn start(addrs: DemoAddrs) -> anyhow::Result<Demo> {
        let simulator = Simulator::start(SimulatorConfig {
            listen: addrs.simulator,
            ..Default::default()
        })
        .await?;
        let (receiver_addr, receiver) = receiver::start().await?;
        let dir = std::env::temp_dir().join(format!("idenfy-gateway-demo-{}", std::process::id()));
        let team_hook = format!("http://{receiver_addr}/idenfy/webhook");
        let config = demo_config_with(addrs, &simulator.url(), &team_hook, &dir)?;
        let gateway = crate::server::start(config).await?;
        if let Some(hook) = gateway.webhook_addr {
            simulator.update_settings(|s| {
                s.webhook_url = Some(format!("http://{hook}/webhooks/idenfy/demo"));
                s.webhook_key = Some(DEMO_WEBHOOK_KEY.into());
            });
        }
        Ok(Demo {
            simulator,
            gateway,
            receiver,
            dir,
        })
    }

    /// What to try, with the real addresses.
    pub fn instructions(&self) -> String {
        let (proxy, admin, sim) = (
            self.gateway.proxy_addr,
            self.gateway.admin_addr,
            self.simulator.addr(),
        );
        format!(
            "idenfy-gateway demo: gateway on http://{proxy} (admin http://{admin}) in front of the iDenfy simulator on http://{sim}

Try:
  # 1. open a verification session (the gateway adds the API key pair; the app holds none)
  curl -si -X POST http://{proxy}/api/v2/token -H 'content-type: application/json' -d '{{\"clientId\":\"demo-user-1\"}}'

  # 2. the same clientId again: the live session is replayed (x-gateway-dedup: replayed), no 409, no second bill
  curl -si -X POST http://{proxy}/api/v2/token -H 'content-type: application/json' -d '{{\"clientId\":\"demo-user-1\"}}'

  # 3. what the gateway did
  curl -s http://{admin}/metrics | grep -E '^idenfy_gateway_(requests|dedup|sessions)'

  # 4. finish the session (its scanRef is in the answer of 1.): the simulator posts its signed webhook to the
  #    gateway, which acknowledges it, ends replay for the session and delivers it, re-signed, to the team (printed here)
  curl -s -X POST http://{sim}/__sim/sessions/SCANREF/finish -d '{{\"status\":\"APPROVED\"}}'

  # 5. the same clientId again: its session is over, so a new one is opened (x-gateway-dedup: leader)
  curl -si -X POST http://{proxy}/api/v2/token -H 'content-type: application/json' -d '{{\"clientId\":\"demo-user-1\"}}'

Also: a field iDenfy would refuse is answered locally (-d '{{\"clientId\":\"x\",\"sex\":\"X\"}}');
take the simulator down with curl -X POST http://{sim}/__sim/down -d '{{\"status\":503}}' (and /__sim/up).
Ctrl-C stops the demo."
        )
    }

    /// Stops the gateway (gracefully), then the simulator and the team endpoint; removes the
    /// webhook queue's directory.
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.simulator.shutdown().await;
        self.receiver.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config/demo.toml` with its variables filled in (the team's webhooks to a closed port, the
/// queue under the temporary directory).
pub fn demo_config(proxy: SocketAddr, admin: SocketAddr, upstream: &str) -> anyhow::Result<Config> {
    let addrs = DemoAddrs {
        proxy,
        admin,
        simulator: SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let dir = std::env::temp_dir().join("idenfy-gateway-demo");
    demo_config_with(addrs, upstream, "http://127.0.0.1:9/idenfy/webhook", &dir)
}

/// `config/demo.toml` with its variables filled in: the team's webhook endpoint `team_hook`,
/// the webhook queue in `dir`.
pub fn demo_config_with(
    addrs: DemoAddrs,
    upstream: &str,
    team_hook: &str,
    dir: &Path,
) -> anyhow::Result<Config> {
    let env = |name: &str| match name {
        "DEMO_PROXY" => Some(addrs.proxy.to_string()),
        "DEMO_ADMIN" => Some(addrs.admin.to_string()),
        "DEMO_WEBHOOK_KEY" => Some(DEMO_WEBHOOK_KEY.to_string()),
        "DEMO_TEAM_WEBHOOK_URL" => Some(team_hook.to_string()),
        "DEMO_TEAM_WEBHOOK_KEY" => Some(receiver::TEAM_WEBHOOK_KEY.to_string()),
        "DEMO_WEBHOOK_DIR" => Some(dir.display().to_string()),
        "DEMO_UPSTREAM" => Some(upstream.to_string()),
        "DEMO_API_KEY" => Some(DEFAULT_API_KEY.to_string()),
        "DEMO_API_SECRET" => Some(DEFAULT_API_SECRET.to_string()),
        _ => None,
    };
    Config::parse(DEMO_CONFIG, &env).map_err(|e| anyhow::anyhow!("config/demo.toml: {e}"))
}
