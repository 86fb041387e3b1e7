//! The test control plane and the dev node: a real kube-apiserver, etcd, scheduler and
//! controller-manager (scripts/test-cluster), and `damocles-operator dev-node` running pods as
//! processes.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{DevNode, cluster, kubectl, namespace, unique, wait_for};

async fn create_pod(pods: &Api<Pod>, spec: serde_json::Value) -> Pod {
    let pod: Pod = serde_json::from_value(spec).unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created")
}

async fn wait_phase(pods: &Api<Pod>, name: &str, phases: &[&str]) -> Pod {
    wait_for(
        &format!("pod {name} in {phases:?}"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await.ok()?;
            let phase = pod.status.as_ref()?.phase.clone()?;
            phases.contains(&phase.as_str()).then_some(pod)
        },
    )
    .await
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    pod.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .expect("terminated state")
}

#[test]
fn the_crd_installs_and_kubectl_explains_it() {
    // The apiserver publishes a new CRD's OpenAPI a few seconds after it is Established.
    let started = std::time::Instant::now();
    while !support::kubectl_output(cluster(), &["explain", "sealingtask.spec"])
        .status
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kubectl explain never found the CRD"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = kubectl(cluster(), &["explain", "sealingtask.spec"]);
    assert!(
        text.contains("resumeState") && text.contains("sectorSize"),
        "{text}"
    );
    let text = kubectl(cluster(), &["explain", "sealingtask.spec.resumeState"]);
    assert!(text.contains("FIELD: resumeState"), "{text}");
}

/// The apiserver (1.34+) warns on every format OpenAPI 3.0 lacks (schemars' `uint64`), and only
/// when a CRD is created: a renamed copy is created in a server dry run to hear its warnings.
#[test]
fn the_apiserver_accepts_the_crd_without_warnings() {
    let renamed = damocles_operator::crd_yaml().replace("damocles.io", "format-check.damocles.io");
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("crd-format-check")));
    std::fs::write(&path, renamed).unwrap();
    let output = support::kubectl_output(
        cluster(),
        &["create", "--dry-run=server", "-f", path.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("Warning"),
        "the apiserver warned: {stderr}"
    );
}

#[tokio::test]
async fn the_apiserver_enforces_the_crd_cel_rules() {
    let client = support::client().await;
    let ns = namespace(&client, "cel").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("damocles.io", "v1alpha1", "SealingTask"),
        "sealingtasks",
    );
    let tasks: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let task = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "damocles.io/v1alpha1", "kind": "SealingTask",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    // An unseal selector on a sealer task: rejected by the apiserver with the rule's message.
    let err = tasks
        .create(
            &PostParams::default(),
            &task(
                "bad",
                json!({"plan": "sealer", "sectorSize": "2KiB",
                       "unseal": {"pieceCid": "baga6ea4seaqa"}}),
            ),
        )
        .await
        .expect_err("the apiserver refuses it");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains(
            "unseal names the unseal request a task expects and is only allowed when plan is unseal"
        ),
        "{}",
        status.message
    );
    // Without a selector an unseal task takes the manager's next request: accepted.
    tasks
        .create(
            &PostParams::default(),
            &task(
                "any-unseal",
                json!({"plan": "unseal", "sectorSize": "2KiB"}),
            ),
        )
        .await
        .expect("an unseal task without a selector is accepted");
    tasks
        .create(
            &PostParams::default(),
            &task("good", json!({"plan": "sealer", "sectorSize": "2KiB"})),
        )
        .await
        .expect("a valid task is accepted");
}

#[tokio::test]
async fn a_gpu_pod_is_scheduled_only_onto_the_gpu_node_and_runs_there() {
    let client = support::client().await;
    let ns = namespace(&client, "gpu").await;
    let (cpu_node, gpu_node) = (unique("cpu"), unique("gpu"));
    let _dev = DevNode::start(
        &client,
        &[
            format!("{cpu_node},cpu=8,label:test={}", ns.name),
            format!(
                "{gpu_node},cpu=8,nvidia.com/gpu=1,hugepages-1Gi=2Gi,label:test={}",
                ns.name
            ),
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    // A configMap volume and downward-API env reach the process at the paths the pod names.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), &ns.name);
    let map = serde_json::from_value(
        json!({"metadata": {"name": "request"}, "data": {"request.json": "{\"step\":\"c2\"}"}}),
    )
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    for name in ["gpu-a", "gpu-b"] {
        create_pod(&pods, json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"test": ns.name},
                "volumes": [{"name": "request", "configMap": {"name": "request"}}],
                "containers": [{
                    "name": "step", "image": "damocles-step:test",
                    "command": ["sh", "-c", "echo \"$NODE $(cat /etc/damocles/request.json)\" > /dev/termination-log; sleep 1"],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "volumeMounts": [{"name": "request", "mountPath": "/etc/damocles"}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }],
            },
        }))
        .await;
    }
    // One GPU on the farm: the two pods run one after the other, both on the GPU node.
    for name in ["gpu-a", "gpu-b"] {
        let pod = wait_phase(&pods, name, &["Succeeded", "Failed"]).await;
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some(gpu_node.as_str())
        );
        let state = terminated(&pod);
        assert_eq!(state.exit_code, 0);
        assert_eq!(
            state.message.as_deref(),
            Some(format!("{gpu_node} {{\"step\":\"c2\"}}\n").as_str())
        );
        let status = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(status.image, "damocles-step:test", "the image is recorded");
    }
    // Two GPUs fit nowhere: the scheduler leaves the pod pending, and nothing runs it.
    create_pod(
        &pods,
        json!({
            "metadata": {"name": "two-gpus"},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                     "containers": [{"name": "step", "image": "x", "command": ["true"],
                                     "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
        }),
    )
    .await;
    wait_for(
        "two-gpus unschedulable",
        Duration::from_secs(30),
        || async {
            let pod = pods.get("two-gpus").await.ok()?;
            let status = pod.status?;
            let unschedulable = status
                .conditions?
                .iter()
                .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"));
            (unschedulable && status.phase.as_deref() == Some("Pending")).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_running_pod_kills_its_process() {
    let client = support::client().await;
    let ns = namespace(&client, "kill").await;
    let node = unique("node");
    let dev = DevNode::start(&client, &[format!("{node},label:test={}", ns.name)]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pid_dir = dev.root.join("host");
    std::fs::create_dir_all(&pid_dir).unwrap();
    create_pod(
        &pods,
        json!({
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "out", "hostPath": {"path": pid_dir, "type": "Directory"}}],
                "containers": [{"name": "main", "image": "x",
                                "command": ["sh", "-c", "sleep 300 & echo $! > /out/pid; wait"],
                                "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
            },
        }),
    )
    .await;
    wait_phase(&pods, "sleeper", &["Running"]).await;
    let pid: i32 = wait_for("the pid file", Duration::from_secs(10), || async {
        std::fs::read_to_string(pid_dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the pod's process runs"
    );
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    // Gone from the API only once its processes are gone, children included.
    wait_for("the pod to disappear", Duration::from_secs(30), || async {
        pods.get_opt("sleeper").await.ok()?.is_none().then_some(())
    })
    .await;
    let alive =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(!alive, "process {pid} still runs after its pod was deleted");
}

#[tokio::test]
async fn a_failing_command_reports_its_exit_code_and_termination_message() {
    let client = support::client().await;
    let ns = namespace(&client, "fail").await;
    let node = unique("node");
    let _dev = DevNode::start(&client, &[format!("{node},label:test={}", ns.name)]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    create_pod(&pods, json!({
        "metadata": {"name": "failing"},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                 "containers": [{"name": "step", "image": "x",
                                 "command": ["sh", "-c", "echo one; echo two >&2; echo three; echo 'C1 output missing' > /dev/termination-log; exit 30"]}]},
    }))
    .await;
    let pod = wait_phase(&pods, "failing", &["Failed", "Succeeded"]).await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let state = terminated(&pod);
    assert_eq!(state.exit_code, 30);
    assert_eq!(state.reason.as_deref(), Some("Error"));
    assert_eq!(state.message.as_deref(), Some("C1 output missing\n"));
    // Its output, through the API server as from a kubelet (pods/log), cut as asked.
    let all = pods.logs("failing", &Default::default()).await.unwrap();
    assert_eq!(all, "one\ntwo\nthree\n");
    let params = kube::api::LogParams {
        container: Some("step".into()),
        tail_lines: Some(2),
        ..Default::default()
    };
    assert_eq!(pods.logs("failing", &params).await.unwrap(), "two\nthree\n");
    let kubectl = support::kubectl(
        support::cluster(),
        &["logs", "--namespace", &ns.name, "failing", "--tail", "1"],
    );
    assert_eq!(kubectl, "three\n");

    // A command that cannot start fails the pod with the reason, instead of hanging.
    create_pod(&pods, json!({
        "metadata": {"name": "no-such-binary"},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                 "containers": [{"name": "step", "image": "x", "command": ["/nonexistent/damocles-step"]}]},
    }))
    .await;
    let pod = wait_phase(&pods, "no-such-binary", &["Failed"]).await;
    let message = pod.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("/nonexistent/damocles-step"), "{message}");
}

/// A pod's API credentials are its ServiceAccount's, as kubelet mounts them (a token bound to the
/// pod); a pod without the mount has none, and never the dev node's own.
#[tokio::test]
async fn a_pod_talks_to_the_api_server_as_its_service_account_only() {
    let client = support::client().await;
    let ns = namespace(&client, "identity").await;
    let node = unique("node");
    let _dev = DevNode::start(&client, &[format!("{node},label:test={}", ns.name)]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let kubectl = cluster().bin.join("kubectl");
    let whoami = format!(
        "{} auth whoami -o jsonpath='{{.status.userInfo.username}}' > /dev/termination-log",
        kubectl.display()
    );
    create_pod(
        &pods,
        json!({
            "metadata": {"name": "mounted"},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                     "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", whoami]}]},
        }),
    )
    .await;
    let pod = wait_phase(&pods, "mounted", &["Failed", "Succeeded"]).await;
    let state = terminated(&pod);
    assert_eq!(
        state.message.as_deref(),
        Some(format!("system:serviceaccount:{}:default", ns.name).as_str()),
        "{state:?}"
    );

    create_pod(
        &pods,
        json!({
            "metadata": {"name": "unmounted"},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"test": ns.name},
                     "automountServiceAccountToken": false,
                     "containers": [{"name": "c", "image": "x", "command":
                         ["sh", "-c", "echo \"${KUBECONFIG:-none}\" > /dev/termination-log"]}]},
        }),
    )
    .await;
    let pod = wait_phase(&pods, "unmounted", &["Failed", "Succeeded"]).await;
    assert_eq!(terminated(&pod).message.as_deref(), Some("none\n"));
}
