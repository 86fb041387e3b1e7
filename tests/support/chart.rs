//! What the chart installs for an operator watching one namespace, applied as `helm install`
//! would: its RBAC (the operator then acts as the chart's ServiceAccount) and its finalizer policy.

use std::path::PathBuf;
use std::time::Duration;

use super::{cluster, helm, unique};

/// A kubeconfig that acts as the chart's ServiceAccount watching `namespace`: the chart's own
/// RBAC and finalizer policy (rendered as `helm install --set watchNamespace=<namespace>` would on
/// this cluster, which serves MutatingAdmissionPolicy), and a token from the TokenRequest API, not
/// the admin's credentials. An operator the tests start has exactly the rights and the help an
/// installed one has. Made once per namespace.
pub fn chart_service_account(namespace: &str) -> PathBuf {
    static MADE: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap();
    if let Some((_, path)) = made.iter().find(|(ns, _)| ns == namespace) {
        return path.clone();
    }
    let info = cluster();
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/damocles-operator");
    let watch = format!("watchNamespace={namespace}");
    let policy = !OPERATOR_ADDS_FINALIZER
        .lock()
        .unwrap()
        .iter()
        .any(|ns| ns == namespace);
    let mut args = vec![
        "template",
        "op",
        chart,
        "--namespace",
        namespace,
        "--set",
        &watch,
        "--set",
        "image.repository=registry.example/damocles-operator",
        "--set",
        "stepImage.repository=registry.example/damocles-step",
        "--api-versions",
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
        "--show-only",
        "templates/rbac.yaml",
    ];
    if policy {
        args.extend(["--show-only", "templates/finalizer-policy.yaml"]);
    }
    let rendered = helm(info, &args);
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let applied = super::kubectl_stdin(
        info,
        &["apply", "--namespace", namespace, "-f", "-"],
        &String::from_utf8_lossy(&rendered.stdout),
    );
    assert!(
        applied.status.success(),
        "the chart's RBAC and finalizer policy: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    if policy {
        finalizer_policy_in_force(namespace);
    }
    let token = super::kubectl(
        info,
        &[
            "create",
            "token",
            "op",
            "--namespace",
            namespace,
            "--duration",
            "24h",
        ],
    );
    let mut config: serde_json::Value = serde_json::from_str(&super::kubectl(
        info,
        &["config", "view", "--raw", "--minify", "-o", "json"],
    ))
    .unwrap();
    config["users"] = serde_json::json!([{"name": "op", "user": {"token": token.trim()}}]);
    config["contexts"][0]["context"]["user"] = "op".into();
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique("op-sa")));
    std::fs::write(&path, config.to_string()).unwrap();
    made.push((namespace.to_string(), path.clone()));
    path
}

/// Namespaces whose operators run as on a cluster older than 1.36 (no finalizer policy): the
/// operator adds its finalizer to each task itself.
static OPERATOR_ADDS_FINALIZER: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The operators of `namespace` run without the chart's finalizer policy, as on a cluster older
/// than 1.36: they add the finalizer themselves (the crash schedule's finalizer-add points). Call
/// before the namespace's first operator starts.
pub fn without_finalizer_policy(namespace: &str) {
    OPERATOR_ADDS_FINALIZER
        .lock()
        .unwrap()
        .push(namespace.to_string());
}

/// Waits until the API server applies the chart's finalizer policy to a task created in
/// `namespace` (it loads a new policy within a second or so), asking with server-side dry runs.
fn finalizer_policy_in_force(namespace: &str) {
    let task = serde_json::json!({
        "apiVersion": "damocles.io/v1alpha1",
        "kind": "SealingTask",
        "metadata": {"name": "finalizer-probe"},
        "spec": {"plan": "sealer", "sectorSize": "2KiB"},
    });
    for _ in 0..100 {
        let created = super::kubectl_stdin(
            cluster(),
            &[
                "create",
                "--dry-run=server",
                "--namespace",
                namespace,
                "-o",
                "jsonpath={.metadata.finalizers}",
                "-f",
                "-",
            ],
            &task.to_string(),
        );
        if String::from_utf8_lossy(&created.stdout)
            .contains(damocles_operator::controller::FINALIZER)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the chart's finalizer policy is not applied to tasks in {namespace} after 10 s");
}
