//! Webhooks (SPEC 12): the change feed pushed to the endpoints in the config, signed as
//! Standard Webhooks, each item at least once and each conversation's in `seq` order.

mod delivery;
pub mod endpoint;
pub mod retry;
pub mod signature;
pub mod target;

pub use endpoint::Endpoint;

use crate::changes::ChangeHub;
use crate::store::Store;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The delivery tasks of this replica.
pub struct Deliveries {
    owner: String,
    endpoints: Vec<Arc<Endpoint>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts delivering every endpoint this replica can take, each in a task of its own.
pub fn spawn(store: &Store, hub: &Arc<ChangeHub>, endpoints: Vec<Arc<Endpoint>>) -> Deliveries {
    let owner = replica_id();
    let tasks = endpoints
        .iter()
        .map(|endpoint| {
            tokio::spawn(delivery::deliver(
                store.clone(),
                hub.clone(),
                endpoint.clone(),
                owner.clone(),
            ))
        })
        .collect();
    Deliveries {
        owner,
        endpoints,
        tasks,
    }
}

impl Deliveries {
    /// Stops delivering and lets the endpoints go, so that another replica takes them at
    /// once rather than when the leases lapse. What was being sent is sent again there.
    pub async fn stop(self, store: &Store) {
        for task in &self.tasks {
            task.abort();
        }
        // Awaited, so that each delivery (and its lease renewer) is gone before the lease
        // is let go: a renewer still running would take it back.
        for task in self.tasks {
            let _ = task.await;
        }
        for endpoint in &self.endpoints {
            if let Err(error) = store.webhook_release(&endpoint.name, &self.owner).await {
                tracing::warn!(endpoint = %endpoint.name, %error, "could not let the webhook go");
            }
        }
    }
}

/// Names this process among the replicas that may hold an endpoint: the host (the pod's
/// name in Kubernetes), the process and a random part, so that a restarted process with
/// the same pid is another holder.
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_owned());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}
