//! SealingPools: observe a pool and the tasks it owns, ask [`crate::pool::decide`], apply.
//!
//! The order of the writes is what keeps counts exact across a crash: tasks are created first
//! (a crash before the status write is recovered from their names), then the status records what
//! was created and which ended tasks are being deleted, then those are deleted (a crash before
//! the delete finds them in `status.retiring` and deletes them again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Context, Error, FIELD_MANAGER};
use crate::api::{SealingPool, SealingTask};
use crate::pool::{self, Member, POOL_LABEL};
use crate::task::condition::WORKSPACE_CLEANED;

/// A pool looks again this often even when nothing it watches changed.
const RESYNC: Duration = Duration::from_secs(300);

pub(super) async fn reconcile(pool: Arc<SealingPool>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let name = pool.name_any();
    let key = format!("{namespace}/{name}");
    let metrics = ctx.metrics.clone();
    let _running = metrics.reconciling.begin(format!("SealingPool {key}"));
    let failed = |action: &'static str| {
        let pool = key.clone();
        move |source: kube::Error| Error::Pool {
            pool,
            action,
            source,
        }
    };
    let pools: Api<SealingPool> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch cache can lag behind our own last status write: act on the current object only.
    let Some(pool) = pools.get_opt(&name).await.map_err(failed("reading it"))? else {
        return Ok(Requeue::await_change());
    };
    if pool.metadata.deletion_timestamp.is_some() {
        // Its tasks go with it (owner references); the garbage collector deletes them.
        return Ok(Requeue::await_change());
    }
    let Some(uid) = pool.uid() else {
        return Ok(Requeue::await_change());
    };
    let tasks: Api<SealingTask> = Api::namespaced(ctx.client.clone(), &namespace);
    // A fresh list, not the watch cache: a task created a moment ago must count, or the pool
    // would start more than it was asked to.
    let listed = tasks
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={name}")))
        .await
        .map_err(failed("listing its tasks"))?;
    let members: Vec<Member> = listed
        .items
        .iter()
        .filter(|task| task.owner_references().iter().any(|o| o.uid == uid))
        .map(|task| {
            let status = task.status.clone().unwrap_or_default();
            Member {
                name: task.name_any(),
                phase: status.phase,
                workspace_cleaned: crate::task::enter::condition_true(&status, WORKSPACE_CLEANED),
            }
        })
        .collect();
    let before = pool.status.clone().unwrap_or_default();
    let mut decision = pool::decide(&name, &pool.spec, &before, &members);

    let mut created = Vec::new();
    let mut failure = None;
    for task_name in &decision.create {
        match create_task(&ctx, &tasks, &pool, &uid, task_name).await {
            Ok(true) => created.push(task_name.clone()),
            Ok(false) => {
                // Not this pool's: its index is used up, and the pool goes on with the next.
                let note = format!(
                    "a SealingTask named {task_name} exists and this pool does not own it; \
                     the pool skips that name"
                );
                warn!(pool = %key, "{note}");
                event(&ctx, &pool, true, "NameTaken", note).await;
            }
            Err(source) => {
                // Only what exists is counted: the next try starts from this name.
                let index = pool::index_of(&name, task_name).expect("the pool's own name");
                let unmade = decision.status.created - index;
                decision.status.created = index;
                decision.status.active -= unmade;
                failure = Some(failed("creating a task")(source));
                break;
            }
        }
    }
    if !created.is_empty() {
        decision.status.last_created = Some(crate::task::enter::time_at(
            k8s_openapi::jiff::Timestamp::now().as_second(),
        ));
        info!(pool = %key, tasks = %created.join(", "), "created");
        event(
            &ctx,
            &pool,
            false,
            "Created",
            format!("created {}", created.join(", ")),
        )
        .await;
    }

    decision.status.observed_generation = pool.metadata.generation;
    if Some(&decision.status) != pool.status.as_ref() {
        let patch = json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingPool",
            "metadata": {"resourceVersion": pool.resource_version()},
            "status": decision.status,
        });
        pools
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(failed("writing its status"))?;
        ctx.metrics.write("pool-status");
    }
    if let Some(failure) = failure {
        return Err(failure);
    }

    let newly_retired: Vec<&String> = decision
        .delete
        .iter()
        .filter(|n| !before.retiring.contains(n))
        .collect();
    if !newly_retired.is_empty() {
        let names: Vec<&str> = newly_retired.iter().map(|n| n.as_str()).collect();
        event(
            &ctx,
            &pool,
            false,
            "Deleted",
            format!(
                "deleting {}: ended, workspace cleaned, beyond the history limit",
                names.join(", ")
            ),
        )
        .await;
    }
    for task_name in &decision.delete {
        ctx.metrics.write("task-delete");
        match tasks.delete(task_name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(failed("deleting an ended task")(source)),
        }
    }
    if decision.create.len() as u32 == pool::CREATE_BATCH {
        // More to create: the next batch at once.
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    Ok(Requeue::requeue(RESYNC))
}

/// Creates the pool's task `name`: true once it exists as this pool's (made now, or by an
/// earlier try), false if a task of that name belongs to someone else.
async fn create_task(
    ctx: &Context,
    tasks: &Api<SealingTask>,
    pool: &SealingPool,
    uid: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let mut task = SealingTask::new(name, pool.spec.template.task_spec());
    task.metadata.namespace = pool.namespace();
    task.metadata.labels = Some(BTreeMap::from([(POOL_LABEL.to_string(), pool.name_any())]));
    task.metadata.owner_references = pool.controller_owner_ref(&()).map(|owner| vec![owner]);
    ctx.metrics.write("task-create");
    match tasks.create(&PostParams::default(), &task).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = tasks.get(name).await?;
            Ok(existing.owner_references().iter().any(|o| o.uid == uid))
        }
        Err(err) => Err(err),
    }
}

async fn event(ctx: &Context, pool: &SealingPool, warning: bool, reason: &str, note: String) {
    ctx.metrics.write("event");
    let event = super::event(warning, reason, &note);
    if let Err(err) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        warn!(pool = %pool.name_any(), "cannot record event {reason}: {err}");
    }
}

pub(super) fn error_policy(_pool: Arc<SealingPool>, err: &Error, ctx: Arc<Context>) -> Requeue {
    if err.is_conflict() {
        return Requeue::requeue(Duration::from_millis(200));
    }
    ctx.metrics.reconcile_errors.inc();
    warn!("{err}");
    Requeue::requeue(Duration::from_secs(5))
}
