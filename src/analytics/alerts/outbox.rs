//! Alerts decided in a round and sent once: a state file beside the lake holds the ids already sent
//! and the outbox of alerts decided but not yet confirmed by the broker. A round plans (queues every
//! alert whose id was never sent), saves, produces the outbox, confirms, then marks it sent and saves
//! again. A crash between the two saves re-sends the same alerts with the same ids; nothing decided
//! is lost, and nothing confirmed is sent again by a later round or a restart.

use crate::lake::{LakeError, LakeRoot};
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An alert with its deterministic id.
pub trait Identified {
    fn id(&self) -> &str;
}

impl Identified for String {
    fn id(&self) -> &str {
        self
    }
}

/// The ids sent (with when, UTC microseconds) and the alerts waiting to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "T: Serialize + DeserializeOwned")]
pub struct SentOnce<T> {
    pub sent: BTreeMap<String, i64>,
    pub outbox: Vec<T>,
}

impl<T> Default for SentOnce<T> {
    fn default() -> Self {
        Self {
            sent: BTreeMap::new(),
            outbox: Vec::new(),
        }
    }
}

impl<T: Serialize + DeserializeOwned + Identified> SentOnce<T> {
    /// Queues each alert never sent and not queued already; returns how many. Pure.
    pub fn plan(&mut self, alerts: impl IntoIterator<Item = T>) -> usize {
        let mut queued = 0;
        for alert in alerts {
            let id = alert.id();
            if self.sent.contains_key(id) || self.outbox.iter().any(|a| a.id() == id) {
                continue;
            }
            self.outbox.push(alert);
            queued += 1;
        }
        queued
    }

    /// After the broker confirmed the outbox: its ids are sent. Pure.
    pub fn mark_sent(&mut self, now_us: i64) {
        for alert in self.outbox.drain(..) {
            self.sent.insert(alert.id().to_owned(), now_us);
        }
    }

    /// Forgets ids sent before `before_us` (their reviews are past every window). Pure.
    pub fn forget_before(&mut self, before_us: i64) {
        self.sent.retain(|_, at| *at >= before_us);
    }

    pub async fn load(lake_root: &LakeRoot, file: &str) -> Result<Self, LakeError> {
        load_json(lake_root, file).await
    }

    pub async fn save(&self, lake_root: &LakeRoot, file: &str) -> Result<(), LakeError> {
        save_json(lake_root, file, self).await
    }
}

/// A state file under the lake root; none yet is the default. A damaged file is an error naming
/// it: silently starting over would send every alert again.
pub async fn load_json<T: DeserializeOwned + Default>(
    lake_root: &LakeRoot,
    file: &str,
) -> Result<T, LakeError> {
    match lake_root.get(file).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| LakeError::State {
            path: format!("{lake_root}/{file}"),
            source,
        }),
        None => Ok(T::default()),
    }
}

/// Saves a state file whole (one put: a reader sees the old state or the new one; on a local lake
/// it is fsynced before this returns).
pub async fn save_json<T: Serialize>(
    lake_root: &LakeRoot,
    file: &str,
    value: &T,
) -> Result<(), LakeError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| LakeError::State {
        path: format!("{lake_root}/{file}"),
        source,
    })?;
    lake_root.put(file, bytes.into()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_alert_is_queued_until_sent_then_never_again() {
        let mut state = SentOnce::<String>::default();
        let round = |ids: &[&str]| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(state.plan(round(&["a", "b"])), 2);
        // Planned again before being sent (a crash before the send): not queued twice.
        assert_eq!(state.plan(round(&["a", "b"])), 0);
        state.mark_sent(10);
        assert!(state.outbox.is_empty());
        assert_eq!(state.plan(round(&["a", "b", "c"])), 1);
        assert_eq!(state.outbox, ["c"]);
        state.mark_sent(20);
        state.forget_before(15);
        assert_eq!(state.sent.keys().collect::<Vec<_>>(), ["c"]);

        let dir = tempfile::tempdir().unwrap();
        let root = LakeRoot::local(dir.path()).unwrap();
        state.save(&root, "x/state.json").await.unwrap();
        assert_eq!(
            SentOnce::<String>::load(&root, "x/state.json")
                .await
                .unwrap(),
            state
        );
        std::fs::write(dir.path().join("x/state.json"), b"{").unwrap();
        let error = SentOnce::<String>::load(&root, "x/state.json")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("state.json"), "{error}");
    }
}
