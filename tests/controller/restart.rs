//! Crashes and restarts: a submitted PreCommit survives a restart and an old ticket; an unreadable
//! task and hostile ones (used by the crash schedule, crash.rs, which kills the operator at every
//! point of every plan).

use super::*;

/// A table of hostile SealingTasks, applied with kubectl as a user would: each is refused by the
/// apiserver with a message naming its field, so the operator never sees one (the test's valid
/// task carries on beside them).
pub(super) fn hostile_tasks_are_refused_naming_the_field(namespace: &str) {
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
pub(super) async fn unreadable_task(namespace: &str, name: &str) -> kube::api::DynamicObject {
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
pub(super) async fn invalid_object_event(namespace: &str, name: &str) -> Option<String> {
    event_note(namespace, name, "InvalidObject").await
}

/// The note of an Event with `reason` about object `name`, once there is one.
pub(super) async fn event_note(namespace: &str, name: &str, reason: &str) -> Option<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(support::client().await, namespace);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find_map(|event| {
        let about = event.regarding.as_ref()?.name.as_deref()? == name;
        (about && event.reason.as_deref() == Some(reason)).then(|| event.note.unwrap_or_default())
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
    assert_eq!(
        status.submitting,
        Some(damocles_operator::plan::Submission::SubmitPreCommit)
    );

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
