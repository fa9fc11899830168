//! `hotspot_opened` / `hotspot_closed` alerts: what changed in the `hotspots` table between two
//! refreshes, announced once each, with ids a crash cannot change.
//!
//! The announcer keeps its own state beside the lake (`_haochaping/alerts/hotspots.json`): the
//! hotspots it has announced as open, and an outbox of alerts decided but not yet confirmed by the
//! broker. A round first decides ([`Announcements::plan`], pure) and saves, then produces the
//! outbox and saves it empty. A crash after the first save re-sends the same alerts (same ids);
//! nothing decided is ever lost, and a refresh's own diff is not relied upon.

use crate::lake::LakeRoot;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::alert::alert_id;
use crate::policy::span::format_cst;

/// Where the announcer's state lives, under the lake root.
pub const STATE_FILE: &str = "_haochaping/alerts/hotspots.json";

/// One hotspot announced as open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// When it was first seen (UTC microseconds): part of its alerts' ids, so a hotspot that closes
    /// and opens again later is a new alert, while a repeat of the same one is not.
    pub opened_at_us: i64,
    /// Its row of the `hotspots` table when last seen (JSON, snake_case columns).
    pub row: serde_json::Value,
}

/// A hotspot alert as it goes on the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotspotAlert {
    pub id: String,
    /// `hotspot_opened` or `hotspot_closed`.
    pub rule: String,
    pub severity: String,
    pub hotspot_id: String,
    pub entity_type: String,
    pub entity_id: String,
    /// The hotspot's row of the `hotspots` table (for a closed one: as last seen open).
    pub hotspot: serde_json::Value,
    pub opened_at: String,
    pub detected_at: String,
}

impl HotspotAlert {
    /// The Kafka key: the entity (a department's code for a department hotspot).
    pub fn key(&self) -> &str {
        &self.entity_id
    }
}

/// The announcer's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Announcements {
    pub open: BTreeMap<String, Open>,
    pub outbox: Vec<HotspotAlert>,
}

fn text(row: &serde_json::Value, name: &str) -> String {
    row.get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

impl Announcements {
    /// Decides the alerts for the hotspots now in the table (`current`: id → row): one
    /// `hotspot_opened` per id not announced yet, one `hotspot_closed` per announced id gone.
    /// Rows of hotspots still open are refreshed. Pure.
    pub fn plan(&mut self, current: &BTreeMap<String, serde_json::Value>, now_us: i64) {
        let closed: Vec<String> = self
            .open
            .keys()
            .filter(|id| !current.contains_key(*id))
            .cloned()
            .collect();
        for id in closed {
            if let Some(open) = self.open.remove(&id) {
                self.outbox
                    .push(Self::alert("hotspot_closed", &id, &open, now_us));
            }
        }
        for (id, row) in current {
            match self.open.get_mut(id) {
                Some(open) => open.row = row.clone(),
                None => {
                    let open = Open {
                        opened_at_us: now_us,
                        row: row.clone(),
                    };
                    self.outbox
                        .push(Self::alert("hotspot_opened", id, &open, now_us));
                    self.open.insert(id.clone(), open);
                }
            }
        }
    }

    fn alert(rule: &str, id: &str, open: &Open, now_us: i64) -> HotspotAlert {
        HotspotAlert {
            id: alert_id(rule, &format!("{id}@{}", open.opened_at_us), 0),
            rule: rule.to_owned(),
            severity: "medium".to_owned(),
            hotspot_id: id.to_owned(),
            entity_type: text(&open.row, "entity_type"),
            entity_id: text(&open.row, "entity_id"),
            hotspot: open.row.clone(),
            opened_at: format_cst(open.opened_at_us),
            detected_at: format_cst(now_us),
        }
    }

    /// The saved state; none yet is an empty one. A damaged file is an error naming it: silently
    /// starting over would announce every open hotspot again under new ids.
    pub async fn load(lake_root: &LakeRoot) -> Result<Self, crate::lake::LakeError> {
        super::outbox::load_json(lake_root, STATE_FILE).await
    }

    /// Saves the state atomically.
    pub async fn save(&self, lake_root: &LakeRoot) -> Result<(), crate::lake::LakeError> {
        super::outbox::save_json(lake_root, STATE_FILE, self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(ids: &[(&str, i64)]) -> BTreeMap<String, serde_json::Value> {
        ids.iter()
            .map(|(id, bad)| {
                (
                    id.to_string(),
                    json!({"hotspot_id": id, "entity_type": "department", "entity_id": format!("D-{id}"), "bad_reviews": bad}),
                )
            })
            .collect()
    }

    #[test]
    fn each_opening_and_closing_is_announced_once() {
        let mut state = Announcements::default();
        // (hotspots in the table as (id, bad reviews), the alerts expected as (rule, id))
        type Round<'a> = (&'a [(&'a str, i64)], &'a [(&'a str, &'a str)]);
        let rounds: [Round<'_>; 5] = [
            (
                &[("a", 3), ("b", 4)],
                &[("hotspot_opened", "a"), ("hotspot_opened", "b")],
            ),
            (&[("a", 5), ("b", 4)], &[]), // still open: nothing new, the row is refreshed
            (&[("b", 4)], &[("hotspot_closed", "a")]),
            (&[("a", 3), ("b", 4)], &[("hotspot_opened", "a")]), // opens again: a new alert
            (&[], &[("hotspot_closed", "a"), ("hotspot_closed", "b")]),
        ];
        let mut ids = std::collections::HashSet::new();
        for (round, (current, expected)) in rounds.iter().enumerate() {
            state.plan(&rows(current), round as i64 * 1_000_000);
            let got: Vec<(&str, &str)> = state
                .outbox
                .iter()
                .map(|a| (a.rule.as_str(), a.hotspot_id.as_str()))
                .collect();
            assert_eq!(&got, expected, "round {round}");
            for alert in &state.outbox {
                assert!(ids.insert(alert.id.clone()), "id repeated: {alert:?}");
                assert_eq!(alert.entity_id, format!("D-{}", alert.hotspot_id));
            }
            state.outbox.clear();
        }
        // The closing of "a" in round 2 carries its row as last seen (5 bad reviews).
        let mut state = Announcements::default();
        state.plan(&rows(&[("a", 3)]), 0);
        state.plan(&rows(&[("a", 5)]), 1);
        state.outbox.clear();
        state.plan(&rows(&[]), 2);
        assert_eq!(state.outbox[0].hotspot["bad_reviews"], 5);
    }

    #[tokio::test]
    async fn a_saved_outbox_survives_and_a_damaged_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = LakeRoot::local(dir.path()).unwrap();
        assert_eq!(
            Announcements::load(&root).await.unwrap(),
            Announcements::default()
        );
        let mut state = Announcements::default();
        state.plan(&rows(&[("a", 3)]), 7);
        state.save(&root).await.unwrap();
        let loaded = Announcements::load(&root).await.unwrap();
        assert_eq!(loaded, state);
        assert_eq!(loaded.outbox.len(), 1);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let error = Announcements::load(&root).await.unwrap_err().to_string();
        assert!(error.contains("hotspots.json"), "{error}");
    }
}
