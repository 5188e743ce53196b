//! Kubernetes Events (events.k8s.io/v1) on hub objects.
//!
//! Each Event is created as its own object. kube-runtime's `Recorder` folds Events of the
//! same reason on one object within six minutes into a series that keeps the *first*
//! note, so "attempt 2 on provider-b" would read as a repeat of "attempt 1 on
//! provider-a" (found by the failover e2e test); our transitions happen once each, and
//! their notes are the point.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::job::events::Note;

/// Publishes Events as this operator replica.
#[derive(Clone)]
pub struct Reporter {
    hub: Client,
    instance: String,
}

impl Reporter {
    /// Events reported by `instance` (the replica's identity) through `hub`.
    pub fn new(hub: Client, instance: &str) -> Self {
        Self {
            hub,
            instance: instance.to_string(),
        }
    }

    /// Publishes `notes` on `regarding` in the background: an Event is a report, never a
    /// reason to hold or fail a reconcile (a lost one is logged).
    pub fn publish(&self, regarding: ObjectReference, notes: Vec<Note>) {
        if notes.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let ns = regarding.namespace.clone().unwrap_or_else(|| "default".into());
            let api: Api<Event> = Api::namespaced(this.hub.clone(), &ns);
            for n in notes {
                let ev = this.event(&regarding, &n);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, reason = %n.reason, "Event not published");
                }
            }
        });
    }

    fn event(&self, regarding: &ObjectReference, n: &Note) -> Event {
        Event {
            metadata: ObjectMeta {
                // `<object>.<random>` like the kubelet's and scheduler's Events (a
                // generateName may not end in '.'): no two Events collide.
                name: Some(format!(
                    "{}.{:016x}",
                    regarding.name.as_deref().unwrap_or("gpufed"),
                    rand::random::<u64>()
                )),
                ..Default::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            type_: Some(if n.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(n.reason.chars().take(128).collect()),
            action: Some(n.action.into()),
            note: Some(n.message.chars().take(1000).collect()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(crate::FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.chars().take(128).collect()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_names_its_object_reporter_and_stays_within_the_api_limits() {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().expect("url"))).expect("client");
        let r = Reporter::new(client, &"replica".repeat(40));
        let regarding = ObjectReference {
            kind: Some("ComputeJob".into()),
            name: Some("train".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        };
        let n = Note {
            warning: true,
            reason: "ProviderLost".into(),
            action: "EndAttempt",
            message: "x".repeat(5000),
        };
        let ev = r.event(&regarding, &n);
        let name = ev.metadata.name.clone().expect("name");
        assert!(
            name.starts_with("train.") && name.len() == "train.".len() + 16,
            "{name}"
        );
        assert_ne!(r.event(&regarding, &n).metadata.name, Some(name), "unique names");
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.reason.as_deref(), Some("ProviderLost"));
        assert_eq!(
            ev.note.as_ref().map(|s| s.len()),
            Some(1000),
            "notes are at most 1 kB"
        );
        assert_eq!(ev.reporting_instance.as_ref().map(|s| s.len()), Some(128));
        assert_eq!(ev.regarding, Some(regarding));
        assert!(ev.event_time.is_some(), "events.k8s.io requires eventTime");
    }
}
