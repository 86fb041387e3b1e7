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
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::error::PoolError;
use super::{Context, FIELD_MANAGER};
use crate::api::{SealingPool, SealingPoolStatus, SealingTask};
use crate::pool::{self, Member, POOL_LABEL, PoolDecision};
use crate::task::condition::WORKSPACE_CLEANED;

/// A pool looks again this often even when nothing it watches changed.
const RESYNC: Duration = Duration::from_secs(300);

/// One pool's reconcile, with what it reads and writes through.
struct PoolRun<'a> {
    ctx: &'a Context,
    pool: SealingPool,
    /// namespace/name.
    key: String,
    pools: Api<SealingPool>,
    tasks: Api<SealingTask>,
}

#[instrument(skip_all, fields(pool = %format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any())))]
pub(super) async fn reconcile(
    guard: Arc<DeserializeGuard<SealingPool>>,
    ctx: Arc<Context>,
) -> Result<Requeue, PoolError> {
    let namespace = guard.namespace().unwrap_or_default();
    let name = guard.name_any();
    let key = format!("{namespace}/{name}");
    let metrics = ctx.metrics.clone();
    let _running = metrics.reconciling.begin(format!("SealingPool {key}"));
    if let Err(invalid) = &guard.0 {
        let message = super::observe::invalid_object::<SealingPool>(
            &ctx,
            &guard.object_ref(&()),
            &namespace,
            &name,
            invalid,
        )
        .await;
        return Err(PoolError::InvalidObject { pool: key, message });
    }
    let pools: Api<SealingPool> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch cache can lag behind our own last status write: act on the current object only.
    let observe = |action| {
        let pool = key.clone();
        move |source| PoolError::Observe {
            pool,
            action,
            source,
        }
    };
    let Some(pool) = pools.get_opt(&name).await.map_err(observe("reading it"))? else {
        return Ok(Requeue::await_change());
    };
    if pool.metadata.deletion_timestamp.is_some() {
        // Its tasks go with it (owner references); the garbage collector deletes them.
        return Ok(Requeue::await_change());
    }
    let run = PoolRun {
        ctx: &ctx,
        tasks: Api::namespaced(ctx.client.clone(), &namespace),
        pools,
        pool,
        key,
    };
    run.run().await
}

impl PoolRun<'_> {
    async fn run(self) -> Result<Requeue, PoolError> {
        let Some(members) = self.members().await? else {
            return Ok(Requeue::await_change());
        };
        let name = self.pool.name_any();
        let before = self.pool.status.clone().unwrap_or_default();
        let mut decision = pool::decide(&name, &self.pool.spec, &before, &members);
        let failure = self.create_tasks(&mut decision).await;
        self.write_status(&decision.status).await?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        self.delete_retired(&decision, &before).await?;
        if decision.create.len() as u32 == pool::CREATE_BATCH {
            // More to create: the next batch at once.
            return Ok(Requeue::requeue(Duration::from_secs(1)));
        }
        Ok(Requeue::requeue(RESYNC))
    }

    /// The pool's tasks, from a fresh list (not the watch cache: a task created a moment ago
    /// must count, or the pool would start more than it was asked to); None for a pool with no
    /// uid yet.
    async fn members(&self) -> Result<Option<Vec<Member>>, PoolError> {
        let Some(uid) = self.pool.uid() else {
            return Ok(None);
        };
        let selector = format!("{POOL_LABEL}={}", self.pool.name_any());
        let listed = self
            .tasks
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| PoolError::Observe {
                pool: self.key.clone(),
                action: "listing its tasks",
                source,
            })?;
        let members = listed
            .items
            .iter()
            .filter(|task| task.owner_references().iter().any(|o| o.uid == uid))
            .map(|task| {
                let status = task.status.clone().unwrap_or_default();
                Member {
                    name: task.name_any(),
                    phase: status.phase,
                    workspace_cleaned: crate::task::status::condition_true(
                        &status,
                        WORKSPACE_CLEANED,
                    ),
                }
            })
            .collect();
        Ok(Some(members))
    }

    /// Creates the decision's tasks in order; the first that cannot be created stops the batch,
    /// and it and those after it are not counted. That failure, if any.
    async fn create_tasks(&self, decision: &mut PoolDecision) -> Option<PoolError> {
        let name = self.pool.name_any();
        let mut created = Vec::new();
        let mut failure = None;
        for task_name in decision.create.clone() {
            match self.create_task(&task_name).await {
                Ok(true) => created.push(task_name),
                Ok(false) => {
                    // Not this pool's: its index is used up, and the pool goes on with the next.
                    let note = format!(
                        "a SealingTask named {task_name} exists and this pool does not own it; \
                         the pool skips that name"
                    );
                    warn!("{note}");
                    self.event(true, "NameTaken", note).await;
                }
                Err(source) => {
                    decision.created_before(&name, &task_name);
                    failure = Some(PoolError::Apply {
                        pool: self.key.clone(),
                        action: "creating a task",
                        source,
                    });
                    break;
                }
            }
        }
        if !created.is_empty() {
            decision.status.last_created = Some(crate::task::status::time_at(
                k8s_openapi::jiff::Timestamp::now().as_second(),
            ));
            let list = created.join(", ");
            info!(tasks = %list, "created");
            self.event(false, "Created", format!("created {list}"))
                .await;
        }
        failure
    }

    /// Creates the pool's task `name`: true once it exists as this pool's (made now, or by an
    /// earlier try), false if a task of that name belongs to someone else.
    async fn create_task(&self, name: &str) -> Result<bool, kube::Error> {
        let pool = &self.pool;
        let mut task = SealingTask::new(name, pool.spec.template.task_spec());
        task.metadata.namespace = pool.namespace();
        task.metadata.labels = Some(BTreeMap::from([(POOL_LABEL.to_string(), pool.name_any())]));
        task.metadata.owner_references = pool.controller_owner_ref(&()).map(|owner| vec![owner]);
        self.ctx.metrics.write("task-create");
        match self.tasks.create(&PostParams::default(), &task).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let existing = self.tasks.get(name).await?;
                let uid = pool.uid();
                Ok(existing
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref()))
            }
            Err(err) => Err(err),
        }
    }

    async fn write_status(&self, status: &SealingPoolStatus) -> Result<(), PoolError> {
        let mut status = status.clone();
        status.observed_generation = self.pool.metadata.generation;
        if Some(&status) == self.pool.status.as_ref() {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingPool",
            "metadata": {"resourceVersion": self.pool.resource_version()},
            "status": status,
        });
        self.pools
            .patch_status(
                &self.pool.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(|source| PoolError::WriteStatus {
                pool: self.key.clone(),
                source,
            })?;
        self.ctx.metrics.write("pool-status");
        Ok(())
    }

    /// Deletes the ended tasks the status now lists as retiring (again, after a crash).
    async fn delete_retired(
        &self,
        decision: &PoolDecision,
        before: &SealingPoolStatus,
    ) -> Result<(), PoolError> {
        let newly_retired: Vec<&str> = decision
            .delete
            .iter()
            .filter(|n| !before.retiring.contains(n))
            .map(String::as_str)
            .collect();
        if !newly_retired.is_empty() {
            let note = format!(
                "deleting {}: ended, workspace cleaned, beyond the history limit",
                newly_retired.join(", ")
            );
            self.event(false, "Deleted", note).await;
        }
        for task_name in &decision.delete {
            self.ctx.metrics.write("task-delete");
            match self
                .tasks
                .delete(task_name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(PoolError::Apply {
                        pool: self.key.clone(),
                        action: "deleting an ended task",
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    async fn event(&self, warning: bool, reason: &str, note: String) {
        publish_event(self.ctx, &self.pool.object_ref(&()), warning, reason, note).await;
    }
}

async fn publish_event(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: &str,
    note: String,
) {
    ctx.metrics.write("event");
    let event = super::event(warning, reason, &note);
    if let Err(err) = ctx.recorder.publish(&event, object).await {
        warn!("cannot record event {reason}: {err}");
    }
}

pub(super) fn error_policy(
    guard: Arc<DeserializeGuard<SealingPool>>,
    err: &PoolError,
    ctx: Arc<Context>,
) -> Requeue {
    if err.is_conflict() {
        return Requeue::requeue(Duration::from_millis(200));
    }
    ctx.metrics.reconcile_error("pool", err.category());
    warn!("{err}");
    if let PoolError::InvalidObject { .. } = err {
        // Reported with a Warning Event; nothing to do until someone fixes the object.
        return Requeue::await_change();
    }
    let key = format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    );
    if ctx.events.allow(&key, std::time::Instant::now()) {
        let object = guard.object_ref(&());
        let (category, note) = (err.category(), err.to_string());
        tokio::spawn(async move { publish_event(&ctx, &object, true, category, note).await });
    }
    Requeue::requeue(Duration::from_secs(5))
}
