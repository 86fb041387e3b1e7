//! A `damocles-operator dev-node` process for the tests.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;

use super::{cluster, unique, wait_for};

/// A `damocles-operator dev-node` process; stopped (SIGTERM, nodes removed) when dropped.
pub struct DevNode {
    child: Child,
    pub root: PathBuf,
    nodes: Vec<String>,
    args: Vec<String>,
}

impl DevNode {
    pub async fn start(client: &Client, nodes: &[String]) -> DevNode {
        Self::start_args(client, nodes, &[]).await
    }

    /// With more `dev-node` flags (e.g. `--missing-image`).
    pub async fn start_args(client: &Client, nodes: &[String], args: &[&str]) -> DevNode {
        let root = std::env::temp_dir().join(unique("damocles-dev-node"));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(&root, nodes, &args);
        wait_ready(client, nodes).await;
        DevNode {
            child,
            root,
            nodes: nodes.to_vec(),
            args,
        }
    }

    /// Kills the agent as a crash would (SIGKILL: no clean-up, its nodes stay) and starts it
    /// again on the same root, as kubelet comes back after a crash with its state directory.
    pub async fn crash_and_restart(&mut self, client: &Client) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.root, &self.nodes, &self.args);
        wait_ready(client, &self.nodes).await;
    }

    fn spawn(root: &std::path::Path, nodes: &[String], args: &[String]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_damocles-operator"));
        command
            .arg("dev-node")
            .arg("--root")
            .arg(root)
            .arg("--remove-nodes-on-exit")
            .args(args);
        for node in nodes {
            command.arg("--node").arg(node);
        }
        // Pods name our binaries by name (the chart's `command: [damocles-operator]`), as an
        // image's PATH would have them.
        let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .parent()
            .unwrap()
            .to_path_buf();
        let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        command
            .env("PATH", path)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .spawn()
            .expect("dev-node starts")
    }
}

async fn wait_ready(client: &Client, nodes: &[String]) {
    let api: Api<Node> = Api::all(client.clone());
    for spec in nodes {
        let name = spec.split(',').next().unwrap().to_string();
        wait_for(
            &format!("node {name} Ready"),
            Duration::from_secs(30),
            || async {
                let node = api.get_opt(&name).await.ok().flatten()?;
                let ready = node
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            },
        )
        .await;
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.root.join("dev-node.log")).unwrap_or_default();
            eprintln!("--- dev-node log ({}) ---\n{log}", self.root.display());
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                if std::env::var_os("DAMOCLES_TEST_KEEP_FARM").is_none() {
                    let _ = std::fs::remove_dir_all(&self.root);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
