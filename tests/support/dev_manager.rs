//! The dev manager as a child process, for tests that need the proofs feature (it verifies proofs
//! with damocles-step).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use damocles_operator::manager::ManagerClient;
use serde_json::Value;

pub struct DevManager {
    child: Child,
    pub address: String,
    pub state: PathBuf,
}

impl DevManager {
    pub fn start(state: &Path, extra: &[&str]) -> DevManager {
        let mut child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .args([
                "dev-manager",
                "--listen",
                "127.0.0.1:0",
                "--block-time",
                "20ms",
            ])
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
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("dev-manager starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        DevManager {
            child,
            address,
            state: state.to_path_buf(),
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
}

impl Drop for DevManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
