//! The Helm chart: lints clean, renders, and what it renders is accepted by a real kube-apiserver
//! (server-side dry run); settings that would make two replicas both act are refused.

mod support;

use std::process::{Command, Output};

use support::{ClusterInfo, cluster, kubectl_output, namespace};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/damocles-operator");

fn helm(info: &ClusterInfo, args: &[&str]) -> Output {
    Command::new(info.bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &info.kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("damocles-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("damocles-helm-config"),
        )
        .output()
        .expect("helm runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_chart_lints_renders_and_the_api_server_accepts_it() {
    let info = cluster();
    let lint = helm(info, &["lint", CHART]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));

    let client = support::client().await;
    let ns = namespace(&client, "chart").await;
    for values in [
        vec![],
        vec![
            "--set",
            "replicas=2",
            "--set",
            "manager.tokenSecret=manager-token",
        ],
        vec![
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "watchNamespace=farm",
        ],
    ] {
        let mut args = vec!["template", "farm", CHART, "--namespace", &ns.name];
        args.extend(values.iter().copied());
        let rendered = helm(info, &args);
        assert!(
            rendered.status.success(),
            "helm {args:?}: {}",
            text(&rendered)
        );
        let manifest = std::env::temp_dir().join(support::unique("chart-manifest"));
        std::fs::write(&manifest, &rendered.stdout).unwrap();
        let applied = kubectl_output(
            info,
            &[
                "apply",
                "--dry-run=server",
                "--namespace",
                &ns.name,
                "-f",
                manifest.to_str().unwrap(),
            ],
        );
        std::fs::remove_file(&manifest).ok();
        assert!(applied.status.success(), "{values:?}: {}", text(&applied));
        let out = text(&applied);
        for kind in [
            "deployment.apps/farm",
            "clusterrole.rbac.authorization.k8s.io/farm",
        ] {
            assert!(out.contains(kind), "{out}");
        }
        let rendered = String::from_utf8_lossy(&rendered.stdout).to_string();
        let leader = values.is_empty() || values.contains(&"replicas=2");
        assert_eq!(
            rendered.contains("--leader-election-namespace"),
            leader,
            "{rendered}"
        );
    }

    let refused = helm(
        info,
        &[
            "template",
            "farm",
            CHART,
            "--set",
            "replicas=2",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("replicas > 1 needs leaderElection.enabled"),
        "{}",
        text(&refused)
    );
}
