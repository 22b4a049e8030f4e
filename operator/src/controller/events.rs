//! Publishing Events: a repeat of the same Event (same object, type, reason, action *and note*)
//! within [`SERIES_TTL`] only counts up its series; a changed note is a new Event. kube's
//! `Recorder` keys a series without the note, so after a key rotation a `RolledOut` Event would
//! keep naming the first hash while its count grew: the Event a user reads must say what happened
//! last.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::EventType,
};
use tokio::sync::Mutex;

/// How long a published Event is remembered for counting repeats (as kube's recorder does).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding_uid: String,
    regarding_name: String,
    namespace: String,
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

struct Published {
    event: Event,
    count: i32,
    at: Instant,
}

pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<Key, Published>>,
}

impl EventRecorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            published: Mutex::new(HashMap::new()),
        }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let key = Key {
            regarding_uid: regarding.uid.clone().unwrap_or_default(),
            regarding_name: regarding.name.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            warning: matches!(type_, EventType::Warning),
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.to_string(),
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let mut published = self.published.lock().await;
        published.retain(|_, p| p.at.elapsed() < SERIES_TTL);
        let now = MicroTime(Timestamp::now());
        if let Some(p) = published.get_mut(&key) {
            p.count += 1;
            p.at = Instant::now();
            p.event.series = Some(EventSeries {
                count: p.count,
                last_observed_time: now,
            });
            let patch = serde_json::json!({"series": p.event.series});
            api.patch(
                &p.event.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            return Ok(());
        }
        let event = Event {
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note.to_string()),
            event_time: Some(now.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.0.as_nanosecond()
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        published.insert(
            key,
            Published {
                event: created,
                count: 1,
                at: Instant::now(),
            },
        );
        Ok(())
    }
}
