//! One interface to a member cluster, whichever way the provider connects.
//!
//! `Push`: the hub talks to the member's API server with the provider's kubeconfig.
//! `Pull`: the hub never connects in; it writes what it wants into the provider's own
//! hub namespace ([`pull`]) and reads back what the provider's agent reported. Placement,
//! failover, metering and settlement use only [`Link`], so they cannot tell the two apart;
//! only the heartbeat's origin differs (a probe vs. the agent's report).

pub mod pull;
pub mod wakes;
pub mod watch;

use std::collections::BTreeMap;

use gpufed_api::GpuProvider;
use gpufed_api::serving::Exposure;
use gpufed_trust::ChallengeRequest;
use kube::Client;

use crate::error::{Error, Result};
use crate::fleet::{MemberView, NodeReports};
use crate::job::build::MemberObjects;
use crate::job::plan::PodView;

/// The member-side operations, usable by the agent on its own cluster.
pub mod ops {
    pub use crate::job::dispatch::{dispatch, manifest};
    pub use crate::job::observe::{
        ReadyNode, ReadyNodes, attempt_pods, attempt_pods_and_ready_nodes, exposure, pod_view, ready_node,
        remove_attempt,
    };
    pub use crate::provider::{probe_reports, probe_with};
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
        /// The member's watched pods and nodes, when watched.
        cache: Option<std::sync::Arc<watch::MemberCache>>,
    },
    /// Through the provider's hub namespace and its agent.
    Pull(pull::PullLink),
}

impl Link {
    fn push_err(provider: &str, e: kube::Error) -> Error {
        Error::member(provider, error_chain(&e))
    }

    /// This link reading from the member's API server only, never from its watches (for
    /// a member this process could not probe: a frozen API server's watch goes quiet
    /// without failing, so its cache would look current while it is not).
    pub fn uncached(self) -> Self {
        match self {
            Link::Push { provider, client, .. } => Link::Push {
                provider,
                client,
                cache: None,
            },
            pull => pull,
        }
    }

    /// The member's GPU nodes, GPU pods, signed node reports and pending challenges.
    /// `Error::Hub` means the hub itself failed, not the provider.
    pub async fn probe(&self, provider: &GpuProvider) -> Result<MemberView> {
        match self {
            Link::Push {
                provider: name,
                client,
                ..
            } => crate::provider::probe(client.clone(), provider)
                .await
                .map_err(|e| Self::push_err(name, e)),
            Link::Pull(link) => link.probe().await,
        }
    }

    /// The member's node reports and challenge requests alone ([`crate::provider::probe_reports`]):
    /// the cheap probe of a challenge round between two heartbeats, with its kind for the
    /// metric: `watched` when the member's node watch is current (the reports come from it
    /// and only the challenge requests are read), else `reports`. `None` in pull mode,
    /// where [`Self::probe`] reads the agent's report, one read already (the agent itself
    /// reports reports-only while a challenge is open).
    pub async fn probe_reports(&self, provider: &GpuProvider) -> Option<Result<(NodeReports, &'static str)>> {
        let Link::Push {
            provider: name,
            client,
            cache,
        } = self
        else {
            return None;
        };
        let selector = &provider.spec.node_selector;
        let probe = match cache.as_ref().filter(|c| c.current()) {
            // The read of the challenge requests also proves the member answers: a frozen
            // API server's watch goes quiet without failing.
            Some(cache) => crate::verification::read_challenges(client)
                .await
                .map(|challenges| {
                    let reports = cache.node_reports(selector);
                    (NodeReports { reports, challenges }, "watched")
                }),
            None => crate::provider::probe_reports(client.clone(), selector)
                .await
                .map(|r| (r, "reports")),
        };
        Some(probe.map_err(|e| Self::push_err(name, e)))
    }

    /// Sets the challenge requests the member's device plugins see.
    pub async fn write_challenges(&self, writes: &BTreeMap<String, ChallengeRequest>) -> Result<()> {
        match self {
            Link::Push { provider, client, .. } => crate::verification::write_challenges(client, writes)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.write_challenges(writes).await,
        }
    }

    /// Makes an attempt's objects exist in the member (missing pods created).
    pub async fn dispatch(&self, objects: &MemberObjects) -> Result<()> {
        match self {
            Link::Push { provider, client, .. } => crate::job::dispatch::dispatch(client, objects)
                .await
                .map_err(|e| Error::member_api(provider, &e)),
            Link::Pull(link) => link.dispatch(objects).await,
        }
    }

    /// The pods of an attempt and the nodes under them that are not Ready.
    /// [`Error::Rejected`]: the member refused the attempt's objects for good (pull mode:
    /// as its agent reports, [`pull::read_assignment`]).
    pub async fn attempt_pods(
        &self,
        namespace: &str,
        uid: &str,
        attempt: u32,
    ) -> Result<(Vec<PodView>, Vec<String>)> {
        match self {
            Link::Push {
                cache: Some(cache), ..
            } if cache.current() => {
                let (pods, ready) = cache.attempt_pods_and_ready_nodes(namespace, uid, attempt);
                Ok(crate::job::observe::views(&pods, &ready))
            }
            Link::Push { provider, client, .. } => {
                crate::job::observe::attempt_pods(client, namespace, uid, attempt)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(link) => link.attempt_pods(namespace, uid, attempt).await,
        }
    }

    /// A serving attempt's Service as the member allocated it.
    pub async fn exposure(&self, namespace: &str, uid: &str, attempt: u32) -> Result<Option<Exposure>> {
        match self {
            Link::Push { provider, client, .. } => crate::job::observe::exposure(client, namespace, uid)
                .await
                .map_err(|e| Self::push_err(provider, e)),
            Link::Pull(link) => link.exposure(namespace, uid, attempt).await,
        }
    }

    /// Removes an attempt's pods (in pull mode: withdraws the assignment if it is job
    /// `uid`'s; the agent removes the pods when it next reaches the hub). Idempotent.
    pub async fn remove_attempt(&self, namespace: &str, uid: &str, attempt: u32) -> Result<()> {
        match self {
            Link::Push { provider, client, .. } => {
                crate::job::observe::remove_attempt(client, namespace, uid, attempt)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(link) => link.remove_own_attempt(namespace, uid, attempt).await,
        }
    }

    /// Removes the checkpoint credentials that an ended attempt up to `attempt` copied into
    /// `namespace`. Pull mode: the agent removes them with the attempt's pods.
    pub async fn remove_credentials(&self, namespace: &str, attempt: u32) -> Result<()> {
        match self {
            Link::Push { provider, client, .. } => {
                crate::job::credentials::remove_copy(client, namespace, attempt)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(_) => Ok(()),
        }
    }

    /// Removes job `uid`'s tenant namespace, unless it is another job's (two jobs' names
    /// can give the same one): push mode [`crate::job::observe::remove_own_namespace`];
    /// pull mode withdraws only this job's Assignments of it, the agent removes it once
    /// none of its job names it. Idempotent.
    pub async fn remove_own_namespace(&self, namespace: &str, uid: &str) -> Result<()> {
        match self {
            Link::Push { provider, client, .. } => {
                crate::job::observe::remove_own_namespace(client, namespace, uid)
                    .await
                    .map_err(|e| Self::push_err(provider, e))
            }
            Link::Pull(link) => link.remove_own_namespace(namespace, uid).await,
        }
    }
}

/// An error and its causes on one line. A transport failure's own text is only
/// "ServiceError: client error (Connect)" whether the member's API server hung (a
/// timeout) or answered junk (a TLS error): the cause that tells them apart is in
/// `source()`, and the provider's Reachable condition must name it (found by the
/// hostile member API test). Causes already quoted by their parent are not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod error_chain_tests {
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn names_the_causes_once() {
        let e = E(
            "ServiceError: client error (Connect)",
            Some(Box::new(E(
                "client error (Connect)",
                Some(Box::new(E(
                    "received corrupt message of type InvalidContentType",
                    None,
                ))),
            ))),
        );
        assert_eq!(
            super::error_chain(&e),
            "ServiceError: client error (Connect): received corrupt message of type InvalidContentType"
        );
        assert_eq!(super::error_chain(&E("plain", None)), "plain");
    }
}
