//! WorkerPing: the replica that acts shows in `damocles-manager util worker list` as a
//! damocles-worker does, with its unfinished tasks as sealing threads. Sent on its own timer,
//! whatever the reconciles do; a failed ping is logged once per run of failures and tried again
//! at the next interval (the manager only records the latest).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::Context;
use crate::manager::wire::WorkerInfo;
use crate::manager::{Call, Manager};

/// How the operator pings the manager.
#[derive(Clone, Debug)]
pub struct WorkerPing {
    pub every: Duration,
    /// The Dest the manager lists (where `util worker resume` would call this worker).
    pub dest: String,
}

/// Pings as the settings say until dropped (the controller stops it with the reconciles); never
/// ends.
pub(super) async fn run(context: Arc<Context>) {
    let Some(ping) = context.settings.worker_ping.clone() else {
        return std::future::pending().await;
    };
    let mut failing = false;
    let mut ticks = tokio::time::interval(ping.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let tasks = context.cache.state();
        let info = WorkerInfo {
            name: context.settings.rules.instance.clone(),
            dest: ping.dest.clone(),
            version: concat!("damocles-operator ", env!("CARGO_PKG_VERSION")).to_string(),
            summary: crate::task::worker::summary(super::readable(&tasks)),
        };
        match context.manager.call(&Call::WorkerPing(info.clone())).await {
            Ok(_) if failing => {
                failing = false;
                info!(name = %info.name, dest = %info.dest, "WorkerPing answered again");
            }
            Ok(_) => debug!(summary = ?info.summary, "WorkerPing"),
            Err(err) if !failing => {
                failing = true;
                warn!(
                    "WorkerPing failed (the manager's worker list will show this operator's last \
                     ping): {err}"
                );
            }
            Err(_) => {}
        }
    }
}
