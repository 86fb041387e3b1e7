//! Test support: the harness every integration test binary shares.
//!
//! - [`cluster`]: the real control plane (scripts/test-cluster), started once per test binary;
//! - [`dev_node`]: `damocles-operator dev-node`, the kubelet stand-in;
//! - [`dev_manager`]: `damocles-operator dev-manager`, damocles-manager's stand-in (proofs);
//! - [`calls`]: the manager's calls as typed methods on the client, for tests that call it;
//! - [`chart`]: what the chart installs for an operator of one namespace (RBAC, finalizer policy);
//! - [`farm`]: an operator, a farm's profiles, store and node: what an operator test starts from.
//!
//! The step and manager tests run step chains with `damocles_operator::step::bench::Chain`, which
//! maps outputs to inputs with the same `StepInputs::absorb` as the operator.
#![allow(dead_code)]

#[cfg(feature = "proofs")]
pub mod calls;
pub mod chart;
pub mod cluster;
#[cfg(feature = "proofs")]
pub mod dev_manager;
pub mod dev_node;
#[cfg(feature = "proofs")]
pub mod farm;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use cluster::{
    ClusterInfo, TestNamespace, client, cluster, helm, kubectl, kubectl_output, kubectl_stdin,
    namespace,
};
#[allow(unused_imports)]
pub use dev_node::DevNode;

/// The address a `damocles-operator dev-manager` child (stdout piped) announces on its first line.
pub fn announced_address(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("the dev manager's stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string()
}

/// A unique, DNS-safe name for this test run.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `check` every 200 ms until it returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
