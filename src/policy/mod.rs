//! Region policies: the rules of the closed loop (DOMAIN.md §2–§3) as data, per region.
//!
//! A policy file (`deploy/policies/*.toml`) names a region by its 6-digit code and sets only the
//! values its document states; `default.toml` sets every value. The effective policy of a region is
//! the default, then its province's file, its city's, its county's, each overriding only the keys it
//! names: Luoning county (410328) takes its own escalation steps and Henan's defaults for the rest.
//! The shipped files are the five documents of `../shared/seeds` as presets, compiled into the
//! binary; `--policies DIR` replaces them with an operator's own set.
//!
//! Every file is checked when loaded: an unknown key, a missing or negative period, a share outside
//! 0–1 or a code that is not a province, city or county of the shipped division table is one line
//! naming the file and the key.
//!
//! [`calendar`] is the official working-day calendar the periods count on; [`span`] is a period and
//! the instant it ends.

pub mod calendar;
pub mod span;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::region::{RegionCode, RegionLevel, RegionTable};
pub use calendar::{Calendar, CalendarError};
pub use span::{Span, Unit};

/// The shipped policy files: the default and the five documents' regions.
const SHIPPED: &[(&str, &str)] = &[
    (
        "deploy/policies/default.toml",
        include_str!("../../deploy/policies/default.toml"),
    ),
    (
        "deploy/policies/410328-luoning.toml",
        include_str!("../../deploy/policies/410328-luoning.toml"),
    ),
    (
        "deploy/policies/220200-jilin.toml",
        include_str!("../../deploy/policies/220200-jilin.toml"),
    ),
    (
        "deploy/policies/350000-fujian.toml",
        include_str!("../../deploy/policies/350000-fujian.toml"),
    ),
    (
        "deploy/policies/411000-xuchang.toml",
        include_str!("../../deploy/policies/411000-xuchang.toml"),
    ),
    (
        "deploy/policies/532800-xishuangbanna.toml",
        include_str!("../../deploy/policies/532800-xishuangbanna.toml"),
    ),
];

/// The file every set of policies starts from.
const DEFAULT_FILE: &str = "default.toml";

/// The rules one region works by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub default_evaluation: DefaultEvaluation,
    pub deadlines: Deadlines,
    pub revisit: Revisit,
}

/// What a finished case that nobody evaluated is recorded as, and when (DOMAIN.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultEvaluation {
    pub level: DefaultLevel,
    /// How long after [`Self::from`] the default is given.
    pub after: Span,
    pub from: PeriodStart,
    /// How long after the service a supplementary (补充) evaluation may still be given.
    pub supplementary_window: Span,
}

/// The levels a default evaluation may take (never a bad review).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultLevel {
    VerySatisfied,
    Satisfied,
    BasicallySatisfied,
}

impl DefaultLevel {
    /// The interface's `satisfaction` code (5 非常满意 … 1 非常不满意).
    pub fn satisfaction(self) -> u8 {
        match self {
            DefaultLevel::VerySatisfied => 5,
            DefaultLevel::Satisfied => 4,
            DefaultLevel::BasicallySatisfied => 3,
        }
    }
}

/// From when a default evaluation's period runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodStart {
    /// The service was finished (办结): Fujian, Jilin.
    ServiceFinished,
    /// The case was generated (办件生成): Xuchang.
    CaseGenerated,
}

/// Every deadline of the closed loop (DOMAIN.md §3). The anchor of each is documented in
/// `default.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    pub forward: Span,
    pub first_contact: Span,
    pub reply: Span,
    pub rectify_simple: Span,
    pub rectify_complex: Span,
    pub extension: Span,
    pub report_back: Span,
    pub appeal: Span,
    pub appeal_audit: Span,
    pub review_apply: Span,
    pub review_decide: Span,
    pub escalate_deputy_leader: Span,
    pub escalate_main_leader: Span,
}

/// Which bad reviews the centre re-visits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revisit {
    /// Share of rectified bad reviews re-visited at random.
    pub random_share: Share,
    /// Share of real-name bad reviews re-visited.
    pub real_name_share: Share,
    /// Re-visit when the evaluator has not re-evaluated within this after the rectification.
    pub no_reevaluation: Span,
}

/// A share between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share(pub f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        if (0.0..=1.0).contains(&value) {
            Ok(Share(value))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a share from 0 to 1, got {value}"
            )))
        }
    }
}

/// A policy file that cannot be used, named with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct PolicyError {
    pub file: String,
    /// The dotted key at fault, or `-` for the file as a whole.
    pub key: String,
    pub message: String,
}

impl PolicyError {
    fn new(file: &str, key: &str, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// One region's file: who it is and what it sets.
#[derive(Debug, Clone)]
struct RegionFile {
    file: String,
    name: String,
    document: String,
    /// The policy keys it sets (without `region`, `name`, `document`).
    values: toml::Table,
}

/// The effective policy of a region, with where each value came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub policy: Policy,
    /// The files applied, default first.
    pub files: Vec<String>,
    /// Dotted key → the file that set it.
    pub origin: BTreeMap<String, String>,
}

/// A set of policies, checked, ready to resolve any region.
#[derive(Debug)]
pub struct Policies {
    default: Arc<Resolved>,
    /// 6-digit region code → the resolved policy of that file's region.
    by_code: HashMap<String, Arc<Resolved>>,
    /// 6-digit region code → its file.
    files: BTreeMap<String, RegionFile>,
}

impl Policies {
    /// The presets shipped in `deploy/policies`.
    pub fn shipped() -> Result<Policies, PolicyError> {
        Policies::parse(SHIPPED, region_table()?)
    }

    /// Every `*.toml` in `dir`, which must hold a `default.toml`.
    pub fn load_dir(dir: &Path) -> Result<Policies, PolicyError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| PolicyError::new(&shown, "-", format!("cannot read the folder: {e}")))?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| PolicyError::new(&shown, "-", e.to_string()))?
                .path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    PolicyError::new(&path.display().to_string(), "-", e.to_string())
                })?;
                files.push((path.display().to_string(), text));
            }
        }
        files.sort();
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        Policies::parse(&borrowed, region_table()?)
    }

    /// Checks and resolves `(file name, text)` pairs; the one named `default.toml` is the base.
    pub fn parse(files: &[(&str, &str)], regions: &RegionTable) -> Result<Policies, PolicyError> {
        let mut base = None;
        let mut region_files = BTreeMap::new();
        for (file, text) in files {
            let mut values: toml::Table = toml::from_str(text)
                .map_err(|e| PolicyError::new(file, "-", e.message().trim().to_owned()))?;
            let region = take_string(&mut values, file, "region")?;
            let name = take_string(&mut values, file, "name")?;
            let document = take_string(&mut values, file, "document")?;
            if Path::new(file)
                .file_name()
                .is_some_and(|f| f == DEFAULT_FILE)
            {
                if let Some(region) = region {
                    return Err(PolicyError::new(
                        file,
                        "region",
                        format!("the default applies everywhere; found region {region:?}"),
                    ));
                }
                base = Some(RegionFile {
                    file: (*file).to_owned(),
                    name: name.unwrap_or_default(),
                    document: document.unwrap_or_default(),
                    values,
                });
                continue;
            }
            let Some(code) = region else {
                return Err(PolicyError::new(
                    file,
                    "region",
                    "missing: a 6-digit region code",
                ));
            };
            check_region(file, &code, regions)?;
            let entry = RegionFile {
                file: (*file).to_owned(),
                name: name.unwrap_or_default(),
                document: document.unwrap_or_default(),
                values,
            };
            if let Some(earlier) = region_files.insert(code.clone(), entry) {
                return Err(PolicyError::new(
                    file,
                    "region",
                    format!("{code} already has a policy in {}", earlier.file),
                ));
            }
        }
        let base = base.ok_or_else(|| {
            PolicyError::new(
                DEFAULT_FILE,
                "-",
                "missing: every set of policies needs a default",
            )
        })?;
        let default = Arc::new(resolve(&[&base])?);
        let mut by_code = HashMap::new();
        for (code, file) in &region_files {
            let mut chain = vec![&base];
            chain.extend(
                ancestors(code)
                    .iter()
                    .filter_map(|ancestor| region_files.get(ancestor)),
            );
            chain.push(file);
            by_code.insert(code.clone(), Arc::new(resolve(&chain)?));
        }
        Ok(Policies {
            default,
            by_code,
            files: region_files,
        })
    }

    /// The effective policy for a region code at any level: its county's, else its city's, else its
    /// province's, else the default.
    pub fn for_region(&self, code: &RegionCode) -> &Arc<Resolved> {
        let county = code.county_str();
        let city = code.city_digits();
        let province = code.province_digits();
        county
            .and_then(|c| self.by_code.get(c))
            .or_else(|| city.and_then(|c| self.by_code.get(c.as_str())))
            .or_else(|| self.by_code.get(province.as_str()))
            .unwrap_or(&self.default)
    }

    /// The default policy alone (for a record whose region code is unusable).
    pub fn default_policy(&self) -> &Arc<Resolved> {
        &self.default
    }

    /// The regions with a file of their own: (code, name, document).
    pub fn regions(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.files
            .iter()
            .map(|(code, f)| (code.as_str(), f.name.as_str(), f.document.as_str()))
    }
}

/// `region`, `name` and `document` are who a file is, not policy values.
fn take_string(
    values: &mut toml::Table,
    file: &str,
    key: &str,
) -> Result<Option<String>, PolicyError> {
    match values.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(PolicyError::new(
            file,
            key,
            format!("expected a string, got {}", other.type_str()),
        )),
    }
}

/// The region must be a province, city or county of the shipped division table.
fn check_region(file: &str, code: &str, regions: &RegionTable) -> Result<(), PolicyError> {
    let not_a_region = |why: &str| {
        PolicyError::new(
            file,
            "region",
            format!(
                "{code:?} {why} (a 6-digit province, city or county code of the {} division table)",
                regions.edition()
            ),
        )
    };
    if code.len() != 6 {
        return Err(not_a_region("is not 6 digits"));
    }
    let full =
        RegionCode::parse(&format!("{code}000000")).map_err(|_| not_a_region("is not a code"))?;
    match regions.get(&full) {
        Some(region) if region.level <= RegionLevel::County => Ok(()),
        _ => Err(not_a_region("is not a region")),
    }
}

/// The 6-digit codes above a region, province first (`410328` → `410000`, `410300`).
fn ancestors(code: &str) -> Vec<String> {
    let province = format!("{}0000", &code[..2]);
    let city = format!("{}00", &code[..4]);
    [province, city]
        .into_iter()
        .filter(|ancestor| ancestor != code)
        .collect()
}

/// Applies the files in order (each over the ones before) and checks the result.
fn resolve(chain: &[&RegionFile]) -> Result<Resolved, PolicyError> {
    let mut merged = toml::Table::new();
    let mut origin = BTreeMap::new();
    for file in chain {
        // Each file is also checked on its own over the default, so an error names the file that
        // made it rather than the region that inherited it.
        if let Some(base) = chain.first().filter(|base| !std::ptr::eq(**base, *file)) {
            let mut alone = base.values.clone();
            overlay(
                &mut alone,
                &file.values,
                "",
                &file.file,
                &mut BTreeMap::new(),
            );
            check(&alone, &file.file)?;
        }
        overlay(&mut merged, &file.values, "", &file.file, &mut origin);
    }
    let last = chain.last().map_or(DEFAULT_FILE, |f| f.file.as_str());
    Ok(Resolved {
        policy: check(&merged, last)?,
        files: chain.iter().map(|f| f.file.clone()).collect(),
        origin,
    })
}

/// Writes `over` onto `into` key by key (tables merge, anything else replaces), recording which
/// file set each leaf.
fn overlay(
    into: &mut toml::Table,
    over: &toml::Table,
    prefix: &str,
    file: &str,
    origin: &mut BTreeMap<String, String>,
) {
    for (key, value) in over {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (into.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(over_inner)) => {
                overlay(inner, over_inner, &path, file, origin);
            }
            _ => {
                if let toml::Value::Table(over_inner) = value {
                    let mut fresh = toml::Table::new();
                    overlay(&mut fresh, over_inner, &path, file, origin);
                    into.insert(key.clone(), toml::Value::Table(fresh));
                } else {
                    origin.insert(path, file.to_owned());
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// A table as a [`Policy`], or the first problem with the key it is at.
fn check(values: &toml::Table, file: &str) -> Result<Policy, PolicyError> {
    serde_path_to_error::deserialize(values.clone()).map_err(|error| {
        let key = error.path().to_string();
        PolicyError::new(
            file,
            if key == "." { "-" } else { &key },
            error.into_inner().message().trim(),
        )
    })
}

fn region_table() -> Result<&'static RegionTable, PolicyError> {
    RegionTable::shipped()
        .map_err(|e| PolicyError::new("schemas/regions/regions-2023.csv", "-", e.to_string()))
}

impl Resolved {
    /// The effective policy as TOML lines, each with the file its value came from.
    pub fn explain(&self) -> String {
        let flat = flatten(&toml::Table::try_from(&self.policy).unwrap_or_default());
        let width = flat
            .iter()
            .map(|(k, v)| k.len() + v.len() + 3)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (key, value) in flat {
            let from = self.origin.get(&key).map_or("?", String::as_str);
            let line = format!("{key} = {value}");
            out.push_str(&format!("{line:<width$}  # {from}\n"));
        }
        out
    }
}

/// Leaves of a table as (dotted key, TOML value), in key order.
fn flatten(table: &toml::Table) -> Vec<(String, String)> {
    fn walk(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(inner, &path, out),
                other => out.push((path, other.to_string())),
            }
        }
    }
    let mut out = Vec::new();
    walk(table, "", &mut out);
    out
}

#[cfg(test)]
mod tests;
