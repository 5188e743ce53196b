//! One interface to a member cluster, whichever way the provider connects.
//!
//! `Push`: the hub talks to the member's API server with the provider's kubeconfig.
//! `Pull`: the hub never connects in; it writes what it wants into the provider's own
//! hub namespace ([`pull`]) and reads back what the provider's agent reported. Placement,
//! failover, metering and settlement use only [`Link`], so they cannot tell the two apart;
//! only the heartbeat's origin differs (a probe vs. the agent's report).

pub mod pull;

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use gpufed_api::serving::Exposure;
use gpufed_trust::ChallengeRequest;
use kube::Client;

use crate::error::{Error, Result};
use crate::fleet::MemberView;
use crate::job::build::MemberObjects;
use crate::job::plan::PodView;

/// The member-side operations, usable by the agent on its own cluster.
pub mod ops {
    pub use crate::job::dispatch::{dispatch, manifest};
    pub use crate::job::observe::{
        ReadyNodes, attempt_pods, attempt_pods_and_ready_nodes, exposure, pod_view, remove_attempt,
        remove_namespace,
    };
    pub use crate::provider::probe_with;
    pub use crate::verification::{read_challenges, write_challenge_data};
}

/// How the hub reaches one provider's member cluster.
#[derive(Clone)]
pub enum Link {
    /// Direct calls to the member's API server.
    Push {
        /// The provider's name.
        provider: String,
        /// A client for the member.
        client: Client,
    },
    /// Through the provider's hub namespace and its agent.
    Pull(pull::PullLink),
}

impl Link {
    fn push_err(provider: &str, e: kube::Error) -> Error {
        Error::member(provider, e)
    }

    /// The member's GPU nodes, GPU pods, signed node reports and pending challenges.
    /// `Error::Hub` means the hub itself failed, not the provider.
    pub async fn probe(&self, provider: &GpuProvider) -> Result<MemberView> {
        match self {
            Link::Push {
                provider: name,
                client,
            } => crate::provider::probe(client.clone(), provider)
                .await
                .map_err(|e| Self::push_err(name, e)),
            Link::Pull(link) => link.probe().await,
        }
    }

    /// Sets the challenge requests the member's device plugins see.
    pub async fn write_challenges(&self, writes: &BTreeMap<String, ChallengeRequest>) -> Result<()> {
        match self {
            Link::Push { provider, client } => crate::verification::write_challenges(client, writes)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.write_challenges(writes).await,
        }
    }

    /// Makes an attempt's objects exist in the member (missing pods created).
    pub async fn dispatch(&self, objects: &MemberObjects) -> Result<()> {
        match self {
            Link::Push { provider, client } => crate::job::dispatch::dispatch(client, objects)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.dispatch(objects).await,
        }
    }

    /// The pods of an attempt and the nodes under them that are not Ready.
    pub async fn attempt_pods(
        &self,
        namespace: &str,
        uid: &str,
        attempt: u32,
    ) -> Result<(Vec<PodView>, Vec<String>)> {
        match self {
            Link::Push { provider, client } => {
                crate::job::observe::attempt_pods(client, namespace, uid, attempt)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(link) => link.attempt_pods(namespace, attempt).await,
        }
    }

    /// A serving attempt's Service as the member allocated it.
    pub async fn exposure(&self, namespace: &str, attempt: u32) -> Result<Option<Exposure>> {
        match self {
            Link::Push { provider, client } => crate::job::observe::exposure(client, namespace)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.exposure(namespace, attempt).await,
        }
    }

    /// Removes an attempt's pods (in pull mode: withdraws the assignment; the agent
    /// removes the pods when it next reaches the hub). Idempotent.
    pub async fn remove_attempt(&self, namespace: &str, uid: &str, attempt: u32) -> Result<()> {
        match self {
            Link::Push { provider, client } => {
                crate::job::observe::remove_attempt(client, namespace, uid, attempt)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(link) => link.remove_attempt(namespace, attempt).await,
        }
    }

    /// Removes a job's tenant namespace. Idempotent.
    pub async fn remove_namespace(&self, namespace: &str) -> Result<()> {
        match self {
            Link::Push { provider, client } => crate::job::observe::remove_namespace(client, namespace)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.remove_namespace(namespace).await,
        }
    }
}
