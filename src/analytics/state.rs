//! The refresh state: which files of `evaluations` and `exclusions` the derived tables were last
//! built from, and from which SQL and thresholds (`_haochaping/analytics/state.json`).

use crate::lake::LakeRoot;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{sql, AnalyticsConfig, AnalyticsError};
use crate::sink::parquet::{parse_day, EVALUATIONS_TABLE};

/// Where the state lives, relative to the lake root.
pub const STATE_PATH: &str = "_haochaping/analytics/state.json";

/// What the derived tables were built from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshState {
    /// xxh3 of the SQL templates and the thresholds.
    pub definition: String,
    /// `evaluations` files (path below the table folder) → size in bytes.
    pub evaluations: BTreeMap<String, u64>,
    /// `exclusions` files → size in bytes.
    pub exclusions: BTreeMap<String, u64>,
}

/// The definition hash: the SQL texts and the thresholds.
pub fn definition(config: &AnalyticsConfig) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, text) in sql::TEMPLATES {
        hasher.update(name.as_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(serde_json::to_string(config).unwrap_or_default().as_bytes());
    format!("{:032x}", hasher.digest128())
}

/// Every `.parquet` file below a folder of the lake, with its size, by path relative to that folder.
async fn list_parquet(
    lake_root: &LakeRoot,
    folder: &str,
) -> Result<BTreeMap<String, u64>, AnalyticsError> {
    let below = format!("{folder}/");
    Ok(lake_root
        .list(folder)
        .await?
        .into_iter()
        .filter_map(|meta| {
            let path = meta.location.as_ref();
            let relative = path.strip_prefix(&below)?;
            relative
                .ends_with(".parquet")
                .then(|| (relative.to_owned(), meta.size))
        })
        .collect())
}

/// The day of a file from its `dt=yyyy-mm-dd` folder.
pub fn day_of_path(path: &str) -> Option<i32> {
    path.split('/')
        .find_map(|segment| segment.strip_prefix("dt="))
        .and_then(parse_day)
}

impl RefreshState {
    /// The lake as it is now.
    pub async fn scan(
        lake_root: &LakeRoot,
        config: &AnalyticsConfig,
    ) -> Result<Self, AnalyticsError> {
        Ok(Self {
            definition: definition(config),
            evaluations: list_parquet(lake_root, EVALUATIONS_TABLE).await?,
            exclusions: list_parquet(lake_root, &super::session::table_dir("exclusions")).await?,
        })
    }

    /// The last saved state, if any.
    pub async fn load(lake_root: &LakeRoot) -> Result<Option<Self>, AnalyticsError> {
        let Some(bytes) = lake_root.get(STATE_PATH).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| AnalyticsError::State {
                path: format!("{lake_root}/{STATE_PATH}"),
                source,
            })
    }

    pub async fn save(&self, lake_root: &LakeRoot) -> Result<(), AnalyticsError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| AnalyticsError::State {
            path: STATE_PATH.into(),
            source,
        })?;
        Ok(lake_root.put(STATE_PATH, bytes.into()).await?)
    }

    /// Every day with an `evaluations` file.
    pub fn days(&self) -> BTreeSet<i32> {
        self.evaluations
            .keys()
            .filter_map(|p| day_of_path(p))
            .collect()
    }

    /// Whether everything must be rebuilt: other SQL or thresholds, or other exclusions (an
    /// exclusion may concern any period).
    pub fn needs_full_rebuild(&self, previous: &Self) -> bool {
        self.definition != previous.definition || self.exclusions != previous.exclusions
    }

    /// Days of files that are new, changed size or are gone since `previous`.
    pub fn touched_days(&self, previous: &Self) -> BTreeSet<i32> {
        let changed = self
            .evaluations
            .iter()
            .filter(|(path, size)| previous.evaluations.get(*path) != Some(size))
            .map(|(path, _)| path);
        let gone = previous
            .evaluations
            .keys()
            .filter(|path| !self.evaluations.contains_key(*path));
        changed.chain(gone).filter_map(|p| day_of_path(p)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(files: &[(&str, u64)]) -> RefreshState {
        RefreshState {
            definition: "d".into(),
            evaluations: files.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect(),
            exclusions: BTreeMap::new(),
        }
    }

    #[test]
    fn touched_days_are_the_days_of_changed_files() {
        let day = |t| parse_day(t).unwrap();
        let before = state(&[
            ("dt=2026-10-01/city=410300/a.parquet", 10),
            ("dt=2026-10-02/city=410300/b.parquet", 10),
            ("dt=2026-10-03/city=410300/c.parquet", 10),
        ]);
        let after = state(&[
            ("dt=2026-10-01/city=410300/a.parquet", 10),
            ("dt=2026-10-02/city=410300/b.parquet", 12),
            ("dt=2026-10-04/city=410300/d.parquet", 10),
            ("no-partition.parquet", 1),
        ]);
        assert_eq!(
            after.touched_days(&before),
            [day("2026-10-02"), day("2026-10-03"), day("2026-10-04")]
                .into_iter()
                .collect()
        );
        assert!(after.touched_days(&after).is_empty());
        assert!(!after.needs_full_rebuild(&before));
        let mut other = after.clone();
        other.exclusions.insert("x.parquet".into(), 1);
        assert!(other.needs_full_rebuild(&after));
        other.exclusions.clear();
        other.definition = "e".into();
        assert!(other.needs_full_rebuild(&after));
        assert_eq!(day_of_path("dt=bad/city=1/x.parquet"), None);
    }

    #[test]
    fn the_definition_follows_the_thresholds() {
        let a = definition(&AnalyticsConfig::default());
        let b = definition(&AnalyticsConfig {
            bottom_n: 5,
            ..Default::default()
        });
        assert_ne!(a, b);
        assert_eq!(a, definition(&AnalyticsConfig::default()));
    }
}
