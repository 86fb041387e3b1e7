//! Crashes and restarts: no submission lost or repeated; an unreadable task stops no other.

use super::*;

/// The operator dies right before submitting the PreCommit (intent recorded) and right after (before
/// recording it), right before submitting the proof, right after submitting the proof, and is
/// SIGKILLed while C2 runs: each time a new operator picks the task up, adopts the running pod, and
/// the dev manager, answering as damocles-manager does (a submission that never arrived polls
/// Failed), counts exactly one submission of each kind.
#[tokio::test]
async fn a_restarted_operator_neither_loses_nor_repeats_a_submission() {
    let scene = Scene::new("restart").await;
    let ns = &scene.ns;
    let farm = &scene.farm;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    // A task the operator cannot read (a status field the schema takes as any string but the
    // operator reads as a CID, as a task written by another version could hold) stops no other
    // task, across every restart below; it gets a Warning Event that names the field.
    let unreadable = unreadable_task(&ns.name, "bad").await;
    hostile_tasks_are_refused_naming_the_field(&ns.name);
    scene.seal("t").await;
    let start = |crash| Operator::start_with(&ns.name, manager, &farm.profiles, crash);

    start(Some("before-submit:SubmitPreCommit")).died().await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(
        (status.state, status.submitting.as_deref()),
        (Some(State::PC2Done), Some("SubmitPreCommit"))
    );

    start(Some("after-submit:SubmitPreCommit")).died().await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(status.state, Some(State::PC2Done));
    assert_eq!(status.submitting.as_deref(), Some("SubmitPreCommit"));

    let mut during_c2 = start(None);
    let c2 = wait_status(tasks, "t", "C2 running", |s| {
        s.state == Some(State::C1Done) && s.phase == Some(Phase::Running) && s.step_pod.is_some()
    })
    .await;
    let pod = c2.status.unwrap().step_pod.unwrap();
    // A resume refused while C2 runs is recorded once and cleared; the task carries on (below,
    // to Finished).
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "Finished"})).await;
    let refused = resume_cleared(tasks, "t").await;
    let status = refused.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ResumeRejected" && c.status == "True")
        .expect("a ResumeRejected condition");
    assert!(condition.message.contains("Finished"), "{condition:?}");
    assert_eq!(status.step_pod.as_deref(), Some(pod.as_str()));
    assert_eq!(status.phase, Some(Phase::Running));
    drop(during_c2.child.kill());
    during_c2.died().await;

    start(Some("before-submit:SubmitProof")).died().await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(
        (status.state, status.submitting.as_deref()),
        (Some(State::C2Done), Some("SubmitProof"))
    );
    assert_eq!(
        status.attempt, 0,
        "the C2 pod {pod} was adopted, not replaced"
    );

    start(Some("after-submit:SubmitProof")).died().await;
    let _operator = start(None);
    wait_phase(tasks, "t", Phase::Finished, Duration::from_secs(600)).await;

    let sector = tasks
        .get("t")
        .await
        .unwrap()
        .status
        .unwrap()
        .sector
        .unwrap();
    let record = &scene.record(sector.number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");

    let warned = wait_for("the InvalidObject event", Duration::from_secs(30), || {
        invalid_object_event(&ns.name, "bad")
    })
    .await;
    assert!(warned.contains("commD"), "{warned}");
    // Left alone: the operator wrote nothing to it, not even a finalizer.
    let resource = kube::api::ApiResource::erase::<SealingTask>(&());
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(support::client().await, &ns.name, &resource);
    let bad = raw.get("bad").await.unwrap();
    assert_eq!(
        bad.data.get("status"),
        unreadable.data.get("status"),
        "{:?}",
        bad.data
    );
    assert!(bad.metadata.finalizers.unwrap_or_default().is_empty());
    assert_eq!(bad.metadata.uid, unreadable.metadata.uid);
}

/// A table of hostile SealingTasks, applied with kubectl as a user would: each is refused by the
/// apiserver with a message naming its field, so the operator never sees one (the test's valid
/// task carries on beside them).
fn hostile_tasks_are_refused_naming_the_field(namespace: &str) {
    use damocles_operator::plan::Plan;
    let info = support::cluster();
    let manifest = |name: &str, spec: serde_json::Value| {
        let mut full = serde_json::json!({"plan": "sealer", "sectorSize": "2KiB"});
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::json!({
            "apiVersion": "damocles.io/v1alpha1", "kind": "SealingTask",
            "metadata": {"name": name}, "spec": full,
        })
        .to_string()
    };
    let create = |input: &str| {
        let output = support::kubectl_stdin(
            info,
            &["create", "--namespace", namespace, "-f", "-"],
            input,
        );
        assert!(!output.status.success(), "accepted: {input:.300}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    for (what, spec, field) in [
        (
            "a huge string",
            serde_json::json!({"resumeState": "A".repeat(100_000)}),
            "spec.resumeState",
        ),
        (
            "a huge piece CID",
            serde_json::json!({"plan": "unseal", "unseal": {"pieceCid": "b".repeat(10_000)}}),
            "spec.unseal.pieceCid",
        ),
        (
            "an unknown field",
            serde_json::json!({"sectorSise": "2KiB"}),
            "spec.sectorSise",
        ),
        (
            "a wrong type",
            serde_json::json!({"ttlSecondsAfterFinished": "soon"}),
            "spec.ttlSecondsAfterFinished",
        ),
        (
            "an integer too large for the operator",
            serde_json::json!({"ttlSecondsAfterFinished": 4_294_967_296u64}),
            "spec.ttlSecondsAfterFinished",
        ),
        (
            "a negative sector number",
            serde_json::json!({"sector": {"miner": 1000, "number": -1}}),
            "spec.sector.number",
        ),
        (
            "an unknown plan",
            serde_json::json!({"plan": "reseal"}),
            "spec.plan",
        ),
        (
            "an unknown sector size",
            serde_json::json!({"sectorSize": "4KiB"}),
            "spec.sectorSize",
        ),
    ] {
        let refusal = create(&manifest("hostile", spec));
        assert!(refusal.contains(field), "{what}: {refusal:.2000}");
    }
    // Every state of some plan that is not a resumable state of another, as that plan's
    // resumeState, in one apply: each object is refused on its own, naming resumeState.
    let mut documents = vec![];
    for plan in Plan::all() {
        let valid: Vec<&str> = plan.resumable_state_names().collect();
        let foreign: BTreeSet<&str> = Plan::all()
            .flat_map(|other| other.resumable_state_names())
            .chain(["NoSuchState"])
            .filter(|state| !valid.contains(state) && *state != "Aborted")
            .collect();
        for (index, state) in foreign.into_iter().enumerate() {
            let name = format!("resume-{}-{index}", plan.kind);
            documents.push(manifest(
                &name,
                serde_json::json!({"plan": plan.kind.to_string(), "resumeState": state}),
            ));
        }
    }
    let count = documents.len();
    assert!(count > 20, "{count}");
    let refusals = create(&documents.join("\n---\n"));
    let refused = refusals
        .lines()
        .filter(|line| line.contains("is invalid") && line.contains("resumeState"))
        .count();
    assert_eq!(refused, count, "{refusals:.4000}");
    let listed = support::kubectl(
        info,
        &[
            "get",
            "sealingtasks",
            "--namespace",
            namespace,
            "-o",
            "name",
        ],
    );
    assert!(
        !listed.contains("hostile") && !listed.contains("resume-"),
        "{listed}"
    );
}

/// Creates a SealingTask the CRD accepts but the operator's types cannot read: a valid spec, and a
/// status whose CommD is no CID (the apiserver checks only that it is a string). Integers too
/// large for the operator cannot be written at all: the CRD gives each its maximum.
async fn unreadable_task(namespace: &str, name: &str) -> kube::api::DynamicObject {
    let resource = kube::api::ApiResource::erase::<SealingTask>(&());
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(support::client().await, namespace, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "damocles.io/v1alpha1",
        "kind": "SealingTask",
        "metadata": {"name": name},
        "spec": {"plan": "sealer", "sectorSize": "2KiB"},
    }))
    .unwrap();
    let too_big: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "damocles.io/v1alpha1",
        "kind": "SealingTask",
        "metadata": {"name": format!("{name}-ttl")},
        "spec": {"plan": "sealer", "sectorSize": "2KiB", "ttlSecondsAfterFinished": 4294967296u64},
    }))
    .unwrap();
    let refused = api
        .create(&PostParams::default(), &too_big)
        .await
        .expect_err("a TTL above u32 is refused by the apiserver");
    assert!(
        refused.to_string().contains("ttlSecondsAfterFinished"),
        "{refused}"
    );
    api.create(&PostParams::default(), &object).await.unwrap();
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"status": {"outputs": {"commD": "not-a-cid"}}}),
        ),
    )
    .await
    .unwrap()
}

/// The note of the InvalidObject Warning Event on task `name`, once there is one.
async fn invalid_object_event(namespace: &str, name: &str) -> Option<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(support::client().await, namespace);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find_map(|event| {
        let about = event.regarding.as_ref()?.name.as_deref()? == name;
        (about && event.reason.as_deref() == Some("InvalidObject"))
            .then(|| event.note.unwrap_or_default())
    })
}

/// The operator dies right after submitting the PreCommit and comes back when the ticket counts
/// as too old: it asks the manager, finds the PreCommit there and carries on, instead of going
/// back for a new ticket (which would seal a commR the manager refuses as Mismatched).
#[tokio::test]
async fn a_submitted_precommit_is_not_rewound_for_an_old_ticket() {
    let scene = Scene::new("submitted").await;
    let ns = &scene.ns;
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    scene.seal("t").await;
    Operator::start_with(
        &ns.name,
        &scene.manager,
        &farm.profiles,
        Some("after-submit:SubmitPreCommit"),
    )
    .died()
    .await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(status.submitting.as_deref(), Some("SubmitPreCommit"));

    // 20 ms blocks and a margin of 2870 epochs: a ticket older than 200 ms is too old to use.
    let _operator = Operator::start_args(
        &ns.name,
        &scene.manager,
        &farm.profiles,
        None,
        &["--block-time", "20ms", "--ticket-margin", "2870"],
    );
    let landed = wait_status(tasks, "t", "the PreCommit landed", |s| {
        s.history.iter().any(|h| h.state == State::PCLanded)
    })
    .await;
    let status = landed.status.unwrap();
    let tickets = status
        .history
        .iter()
        .filter(|h| h.state == State::TicketAssigned)
        .count();
    assert_eq!(tickets, 1, "no second ticket: {:?}", status.history);
    let record = &scene.record(status.sector.unwrap().number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    delete_and_wait(tasks, "t").await;
}
