//! Leader election on a coordination.k8s.io Lease (kube-lease-manager), so that of several
//! replicas exactly one acts on tasks. The others stand by, serving /healthz, /readyz and
//! /metrics, and take over when the leader's Lease expires or is released.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the Lease lives and how long a leader's claim lasts without renewal.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    /// Seconds a claim stays valid after its last renewal (client-go's default is 15).
    pub duration_seconds: u64,
    /// Seconds before expiry at which the leader renews; also the clock skew tolerated.
    pub grace_seconds: u64,
}

/// This replica's claim on the Lease.
pub struct Leadership {
    held: watch::Receiver<bool>,
    renewer: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the Lease.
pub async fn acquire(
    client: Client,
    election: &LeaderElection,
    identity: &str,
) -> anyhow::Result<Leadership> {
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(identity)
        .with_duration(election.duration_seconds)
        .with_grace(election.grace_seconds)
        .with_field_manager("damocles-operator-leader-election")
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot use the leader-election Lease {}/{}: {e}",
                election.namespace,
                election.lease
            )
        })?;
    let (mut held, renewer) = manager.watch().await;
    while !*held.borrow_and_update() {
        held.changed().await.map_err(|_| {
            anyhow::anyhow!(
                "the leader-election Lease {}/{} could not be watched",
                election.namespace,
                election.lease
            )
        })?;
    }
    Ok(Leadership { held, renewer })
}

impl Leadership {
    /// Resolves when this replica no longer holds the Lease (another took it, or renewing it
    /// failed for good).
    pub async fn lost(&mut self) {
        while *self.held.borrow_and_update() {
            if self.held.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up (on shutdown), so a standby replica takes over at once instead of
    /// after the claim expires.
    pub async fn release(self) {
        drop(self.held);
        match self.renewer.await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!("releasing the leader-election Lease: {err}"),
            Err(err) => tracing::warn!("releasing the leader-election Lease: {err}"),
        }
    }
}
