//! The Helm chart: lints clean, renders, and what it renders is accepted by a real kube-apiserver
//! (server-side dry run); settings that would make two replicas both act are refused.

mod support;

use std::process::{Command, Output};

use support::{cluster, helm, kubectl_output, namespace};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/damocles-operator");

/// Where a farm pushed the images (the chart requires them: this project publishes none yet).
const IMAGES: [&str; 4] = [
    "--set",
    "image.repository=registry.example/damocles-operator",
    "--set",
    "stepImage.repository=registry.example/damocles-step",
];

/// The API of the chart's finalizer policy (Kubernetes 1.36 and later), as helm names it.
const POLICY_API: &str = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy";

/// helm with the chart's required image values.
fn chart(info: &support::ClusterInfo, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(IMAGES);
    helm(info, &all)
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
    let lint = chart(info, &["lint", CHART]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));

    let client = support::client().await;
    let ns = namespace(&client, "chart").await;
    let watch_here = format!("watchNamespace={}", ns.name);
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
            &watch_here,
        ],
    ] {
        // Rendered as `helm install` would on this cluster, which serves MutatingAdmissionPolicy.
        let mut args = vec![
            "template",
            "farm",
            CHART,
            "--namespace",
            &ns.name,
            "--api-versions",
            POLICY_API,
        ];
        args.extend(values.iter().copied());
        let rendered = chart(info, &args);
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
        // Cluster-wide objects carry the release namespace: two releases named alike in two
        // namespaces do not share them.
        let cluster_role = format!("clusterrole.rbac.authorization.k8s.io/{}-farm", ns.name);
        let policy = format!(
            "mutatingadmissionpolicy.admissionregistration.k8s.io/{}-farm-finalizer",
            ns.name
        );
        let binding = format!(
            "mutatingadmissionpolicybinding.admissionregistration.k8s.io/{}-farm-finalizer",
            ns.name
        );
        for kind in ["deployment.apps/farm", &cluster_role, &policy, &binding] {
            assert!(out.contains(kind), "{out}");
        }
        let rendered = String::from_utf8_lossy(&rendered.stdout).to_string();
        // The finalizer the operator removes, and only in the namespace it watches when it
        // watches one (a task nobody watches must stay deletable).
        let policy_docs: String = rendered
            .split("---")
            .filter(|doc| doc.contains("kind: MutatingAdmissionPolicy"))
            .collect();
        assert!(
            policy_docs.contains(&format!(
                "value: [\"{}\"]",
                damocles_operator::controller::FINALIZER
            )),
            "{policy_docs}"
        );
        let namespace_label = format!("kubernetes.io/metadata.name: {}", ns.name);
        assert_eq!(
            policy_docs.contains(&namespace_label),
            values.contains(&watch_here.as_str()),
            "{policy_docs}"
        );
        // Watching one namespace, the operator's rights over tasks, pods and events are a Role
        // there; the ClusterRole keeps only nodes and the CRD.
        let namespaced = values.contains(&watch_here.as_str());
        assert_eq!(
            out.contains("role.rbac.authorization.k8s.io/farm created")
                && out.contains("rolebinding.rbac.authorization.k8s.io/farm created"),
            namespaced,
            "{out}"
        );
        let cluster_rules = rendered
            .split("---")
            .find(|doc| doc.contains("kind: ClusterRole\n"))
            .unwrap();
        assert_eq!(
            cluster_rules.contains("resources: [sealingtasks]"),
            !namespaced,
            "{cluster_rules}"
        );
        assert!(
            !rendered
                .lines()
                .any(|l| l.contains("verbs:") && l.contains("update")),
            "no verb the operator does not use: {rendered}"
        );
        let leader = values.is_empty() || values.contains(&"replicas=2");
        assert_eq!(
            rendered.contains("--leader-election-namespace"),
            leader,
            "{rendered}"
        );
        // Without leader election an upgrade must not run two operators at once.
        assert_eq!(rendered.contains("type: Recreate"), !leader, "{rendered}");
        assert_eq!(
            rendered.contains("kind: PodDisruptionBudget"),
            values.contains(&"replicas=2"),
            "a budget only where a replica can stay: {rendered}"
        );
        assert!(rendered.contains("app.kubernetes.io/managed-by: Helm"));
        assert!(rendered.contains("readOnlyRootFilesystem: true"));
        // The step image moves with the operator: the chart's appVersion by default.
        let app_version = format!("damocles-step:{}", env!("CARGO_PKG_VERSION"));
        assert!(rendered.contains(&app_version), "{rendered}");
    }

    // No finalizer policy where the cluster does not serve the API (before 1.36), nor when
    // turned off: the operator then adds the finalizer itself.
    for args in [
        vec!["template", "farm", CHART],
        vec![
            "template",
            "farm",
            CHART,
            "--api-versions",
            POLICY_API,
            "--set",
            "finalizerPolicy=false",
        ],
    ] {
        let rendered = chart(info, &args);
        assert!(rendered.status.success(), "{}", text(&rendered));
        assert!(
            !text(&rendered).contains("MutatingAdmissionPolicy"),
            "{args:?}"
        );
    }

    // Client-side only: the test control plane has no Prometheus Operator CRDs.
    let monitored = chart(
        info,
        &[
            "template",
            "farm",
            CHART,
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
    );
    assert!(monitored.status.success(), "{}", text(&monitored));
    assert!(text(&monitored).contains("kind: ServiceMonitor"));
    let notes = chart(info, &["install", "--dry-run=client", "farm", CHART]);
    assert!(
        notes.status.success()
            && text(&notes).contains("kubectl apply -f examples/sealer-2kib.yaml"),
        "NOTES.txt with the first commands: {}",
        text(&notes)
    );
    for (set, refusal) in [
        (
            "managr.address=x",
            "additional properties 'managr' not allowed",
        ),
        ("manager.timeout=30x", "does not match pattern"),
        ("ticketExpiry=never", "ticketExpiry"),
    ] {
        let refused = chart(info, &["template", "farm", CHART, "--set", set]);
        assert!(!refused.status.success(), "{set} was accepted");
        assert!(
            text(&refused).contains(refusal),
            "{set}: {}",
            text(&refused)
        );
    }

    // Without the images a farm built, a clear error rather than pods that never pull.
    let unnamed = helm(info, &["template", "farm", CHART]);
    assert!(
        !unnamed.status.success()
            && text(&unnamed).contains("repository is required")
            && text(&unnamed).contains("docs/images.md"),
        "{}",
        text(&unnamed)
    );
    let unnamed = helm(info, &["template", "farm", CHART, "--set", IMAGES[3]]);
    assert!(
        !unnamed.status.success()
            && text(&unnamed).contains("image.repository is required: build images/operator"),
        "{}",
        text(&unnamed)
    );
    let refused = chart(
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

/// Every key of values.yaml is described by values.schema.json and every key the schema
/// describes is in values.yaml, so `helm install --set` of a misspelt key is refused (the schema
/// allows no others) and no documented default is missing.
#[test]
fn the_values_schema_describes_exactly_the_values() {
    let values: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/values.schema.json")).unwrap(),
    )
    .unwrap();
    fn walk(
        path: &str,
        values: &serde_json::Value,
        schema: &serde_json::Value,
        problems: &mut Vec<String>,
    ) {
        let (Some(values), Some(properties)) =
            (values.as_object(), schema["properties"].as_object())
        else {
            return;
        };
        assert_eq!(
            schema["additionalProperties"],
            serde_json::Value::Bool(false),
            "{path}: a schema object with properties must refuse others"
        );
        for (key, value) in values {
            match properties.get(key) {
                Some(described) => walk(&format!("{path}.{key}"), value, described, problems),
                None => problems.push(format!("{path}.{key} is in values.yaml, not in the schema")),
            }
        }
        for key in properties.keys() {
            if !values.contains_key(key) {
                problems.push(format!("{path}.{key} is in the schema, not in values.yaml"));
            }
        }
    }
    let mut problems = Vec::new();
    walk("", &values, &schema, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The profiles the chart renders by default are ones the operator accepts, and they use a GPU
/// node's hardware: PC2 with the GPU builders on, and the first workspace step of a sealer (which
/// picks the node) tolerating a GPU pool's taint.
#[test]
fn the_default_profiles_parse_and_are_ready_for_gpu_nodes() {
    use damocles_operator::plan::{PlanKind, StepKind};
    use damocles_operator::task::Profiles;
    let info = cluster();
    let rendered = chart(
        info,
        &[
            "template",
            "farm",
            CHART,
            "--show-only",
            "templates/configmap.yaml",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let configmap: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&rendered.stdout)).unwrap();
    let profiles = Profiles::parse(configmap["data"]["profiles.yaml"].as_str().unwrap())
        .expect("the operator accepts the chart's profiles");
    let backoff = std::time::Duration::from_secs(60);
    let pc2 = profiles.resolve(StepKind::Pc2, backoff);
    for var in [
        "FIL_PROOFS_USE_GPU_COLUMN_BUILDER",
        "FIL_PROOFS_USE_GPU_TREE_BUILDER",
    ] {
        assert!(
            pc2.env
                .iter()
                .any(|e| e.name == var && e.value.as_deref() == Some("1")),
            "{var} on pc2: {:?}",
            pc2.env
        );
    }
    assert!(
        pc2.env.iter().any(|e| e.name == "RUST_LOG"),
        "defaults kept"
    );
    let placement = profiles
        .workspace_placement(PlanKind::Sealer.plan(), backoff)
        .unwrap();
    assert!(
        placement
            .tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("nvidia.com/gpu")),
        "{placement:?}"
    );
    assert_eq!(
        profiles.resolve(StepKind::AddPiece, backoff).image,
        format!(
            "registry.example/damocles-step:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// An upgrade that leaves an older CRD in place (Helm never updates a chart's crds/): the
/// operator refuses to start, saying how to update it, and starts once it is updated. This test
/// binary's control plane is its own, so changing its CRD touches no other test.
#[test]
fn the_operator_refuses_a_crd_of_another_version() {
    let info = cluster();
    let set_schema = |value: &str| {
        let patched = kubectl_output(
            info,
            &[
                "annotate",
                "--overwrite",
                "crd/sealingtasks.damocles.io",
                &format!("{}={value}", damocles_operator::CRD_SCHEMA_ANNOTATION),
            ],
        );
        assert!(patched.status.success(), "{}", text(&patched));
    };
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .args(["run", "--manager", "127.0.0.1:9", "--no-leader-election"])
            .args(["--metrics-address", "127.0.0.1:0"])
            .env("KUBECONFIG", &info.kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the operator starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return Some(child.wait_with_output().unwrap());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        None
    };
    set_schema("0000000000000000");
    let refused = start().expect("the operator exits at once");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("has schema 0000000000000000 but this operator")
            && stderr.contains("damocles-operator crd | kubectl apply"),
        "{stderr}"
    );
    // The one command the docs give for an upgrade.
    let updated = kubectl_output(
        info,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &format!("{CHART}/crds/sealingtask.yaml"),
        ],
    );
    assert!(updated.status.success(), "{}", text(&updated));
    assert!(
        start().is_none(),
        "with this version's CRD the operator keeps running"
    );
}

/// The alerts and the dashboard: rendered as a PrometheusRule and a ConfigMap exactly from the
/// chart's monitoring/ files, which parse as Prometheus rules and PromQL naming only metrics
/// the operator exports (scripts/check-monitoring, with Prometheus' parser ported to Rust).
#[test]
fn the_alerts_and_the_dashboard_render_and_their_queries_parse() {
    let info = cluster();
    let rendered = chart(
        info,
        &[
            "template",
            "farm",
            CHART,
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let documents: Vec<serde_json::Value> = String::from_utf8_lossy(&rendered.stdout)
        .split("\n---")
        .filter_map(|doc| serde_saphyr::from_str(doc).ok())
        .collect();
    let find = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"].as_str().is_some())
            .unwrap_or_else(|| panic!("no {kind} rendered"))
            .clone()
    };
    let file = |name: &str| std::fs::read_to_string(format!("{CHART}/monitoring/{name}")).unwrap();
    let rule = find("PrometheusRule");
    let alerts: serde_json::Value = serde_saphyr::from_str(&file("alerts.yaml")).unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    let dashboard = documents
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap");
    let json: serde_json::Value = serde_json::from_str(
        dashboard["data"]["damocles-operator.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let committed: serde_json::Value = serde_json::from_str(&file("dashboard.json")).unwrap();
    assert_eq!(json, committed);

    let checked = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/check-monitoring"
    ))
    .output()
    .unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
}
