//! The dev manager as a child process, for tests that need the proofs feature (it verifies proofs
//! with damocles-step).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use damocles_operator::manager::ManagerClient;
use serde_json::Value;

/// The market (droplet) token the dev manager plays the market with (`--market-token`).
pub const MARKET_TOKEN: &str = "dev-market-secret";

pub struct DevManager {
    child: Option<Child>,
    pub address: String,
    pub state: PathBuf,
    args: Vec<String>,
}

impl DevManager {
    pub fn start(state: &Path, extra: &[&str]) -> DevManager {
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Self::start_on("127.0.0.1:0", state, args)
    }

    /// Stops the manager process: its port refuses connections until [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the manager again on the same address, with the same state file and flags.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::start_on(&self.address, &self.state, self.args.clone());
        assert_eq!(again.address, self.address);
        *self = again;
    }

    fn start_on(listen: &str, state: &Path, args: Vec<String>) -> DevManager {
        let mut child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .args(["dev-manager", "--listen", listen, "--block-time", "20ms"])
            .args([
                "--precommit-landing",
                "2",
                "--seed-delay",
                "5",
                "--proof-landing",
                "2",
            ])
            .arg("--state")
            .arg(state)
            .arg("--step-bin")
            .arg(env!("CARGO_BIN_EXE_damocles-step"))
            .args(["--market-token", MARKET_TOKEN])
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("dev-manager starts");
        let address = super::announced_address(&mut child);
        DevManager {
            child: Some(child),
            address,
            state: state.to_path_buf(),
            args,
        }
    }

    pub fn client(&self) -> ManagerClient {
        ManagerClient::new(&self.address, None, Duration::from_secs(120)).unwrap()
    }

    pub async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://{}{path}", self.address);
        let http = reqwest::Client::new();
        let request = match body {
            Some(body) => http.post(url).json(&body),
            None => http.get(url),
        };
        request.send().await.unwrap().json().await.unwrap()
    }

    /// A deal of `payload_size` random bytes in the market (`POST /admin/deals`): the deal.
    pub async fn add_deal(&self, payload_size: u64) -> Value {
        let deal = self
            .admin(
                "/admin/deals",
                Some(serde_json::json!({"payloadSize": payload_size})),
            )
            .await;
        assert!(deal["pieceCid"].is_string(), "{deal}");
        deal
    }
}

impl Drop for DevManager {
    fn drop(&mut self) {
        self.stop();
    }
}
