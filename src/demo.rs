//! `idenfy-gateway demo`: the iDenfy simulator and the gateway in front of it, on loopback, with
//! the configuration in `config/demo.toml`, so a newcomer can try everything with curl.

use std::net::SocketAddr;

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

/// The running demo.
pub struct Demo {
    pub simulator: Simulator,
    pub gateway: Running,
}

impl Demo {
    /// Starts the simulator, then the gateway in front of it.
    pub async fn start(addrs: DemoAddrs) -> anyhow::Result<Demo> {
        let simulator = Simulator::start(SimulatorConfig {
            listen: addrs.simulator,
            ..Default::default()
        })
        .await?;
        let config = demo_config(addrs.proxy, addrs.admin, &simulator.url())?;
        let gateway = crate::server::start(config).await?;
        Ok(Demo { simulator, gateway })
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

Also: a field iDenfy would refuse is answered locally (-d '{{\"clientId\":\"x\",\"sex\":\"X\"}}');
take the simulator down with curl -X POST http://{sim}/__sim/down -d '{{\"status\":503}}' (and /__sim/up).
Ctrl-C stops the demo."
        )
    }

    /// Stops the gateway (gracefully), then the simulator.
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.simulator.shutdown().await;
    }
}

/// `config/demo.toml` with its variables filled in.
pub fn demo_config(proxy: SocketAddr, admin: SocketAddr, upstream: &str) -> anyhow::Result<Config> {
    let env = |name: &str| match name {
        "DEMO_PROXY" => Some(proxy.to_string()),
        "DEMO_ADMIN" => Some(admin.to_string()),
        "DEMO_UPSTREAM" => Some(upstream.to_string()),
        "DEMO_API_KEY" => Some(DEFAULT_API_KEY.to_string()),
        "DEMO_API_SECRET" => Some(DEFAULT_API_SECRET.to_string()),
        _ => None,
    };
    Config::parse(DEMO_CONFIG, &env).map_err(|e| anyhow::anyhow!("config/demo.toml: {e}"))
}
