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
                    name_head(regarding.name.as_deref().unwrap_or("gpufed")),
                    rand::random::<u64>()
                )),
                ..Default::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            type_: Some(if n.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(n.reason.chars().take(128).collect()),
            action: Some(n.action.into()),
            note: Some(cut_bytes(&n.message, 1024).to_owned()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(crate::FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.chars().take(128).collect()),
            ..Default::default()
        }
    }
}

/// An object's name as the head of its Events' names: at most 236 bytes, so the name
/// with its `.` and 16 hex stays a DNS subdomain of at most 253 (an object's own name
/// may be 253 long; a longer Event name is refused, and its Event lost); a cut name
/// ends in a letter or digit.
fn name_head(name: &str) -> &str {
    cut_bytes(name, 253 - 17).trim_end_matches(['.', '-'])
}

/// `s` cut to at most `max` bytes on a character boundary (the API's limits on an
/// Event's note are bytes).
fn cut_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
            Some(1024),
            "notes are at most 1 KiB (bytes)"
        );
        assert_eq!(ev.reporting_instance.as_ref().map(|s| s.len()), Some(128));
        assert_eq!(ev.regarding, Some(regarding));
        assert!(ev.event_time.is_some(), "events.k8s.io requires eventTime");
    }

    #[test]
    fn an_event_of_a_long_named_object_keeps_a_valid_name_and_note() {
        let long = format!("{}.{}", "a".repeat(235), "b".repeat(17));
        assert_eq!(long.len(), 253);
        assert_eq!(name_head(&long), "a".repeat(235), "cut, without the trailing dot");
        assert_eq!(name_head("train"), "train");
        let note = "é".repeat(1000);
        let cut = cut_bytes(&note, 1024);
        assert_eq!(
            (cut.len(), cut.chars().count()),
            (1024, 512),
            "bytes, on a boundary"
        );
        assert_eq!(cut_bytes("é", 1), "");
    }
}
