//! An alert as consumers read it (`schemas/alert.schema.json`): snake_case like the lake, codes with
//! their names, times in China Standard Time, and an id that a replay reproduces.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, GenericListArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type, Int8Type, TimestampMicrosecondType};
use serde::Serialize;

use super::Fired;
use crate::policy::span::format_cst;
use crate::policy::{Calendar, Policies};
use crate::region::{RegionCode, RegionTable};

/// One alert on the `alerts` topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Deterministic: the same rule on the same evaluation always has the same id, so consumers
    /// drop the repeat a replay after a crash may send.
    pub id: String,
    pub rule: String,
    /// `high` or `medium` (chosen by the rule's SQL).
    pub severity: String,
    /// How many bad reviews the rule counted, this one included.
    pub related_reviews: i64,
    pub project_no: String,
    pub assess_number: i8,
    /// 1 (非常不满意) or 2 (不满意).
    pub level: i8,
    pub level_name: &'static str,
    pub item: Coded,
    pub department: Coded,
    pub region: Regions,
    pub channel: Coded,
    pub staff: Option<Coded>,
    pub tags: Vec<Tag>,
    pub text: Option<String>,
    /// The evaluator's keyed hash (never the identity); absent for an anonymous evaluation.
    pub evaluator_key: Option<String>,
    pub given_at: String,
    pub detected_at: String,
    /// When forwarding to the department is due: the end (24:00 CST) of the last day of the region
    /// policy's `deadlines.forward` period after the day given. `None` when the official calendar
    /// has no data for a day the period spans (never a guessed date).
    pub forward_by: Option<String>,
    /// The region policy's forwarding period (`2 working days`).
    pub forward_within: String,
    pub source: Source,
}

/// A code with its name.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Coded {
    pub code: String,
    pub name: Option<String>,
}

/// The evaluation's division at every level, with names from the shipped division table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regions {
    pub area_code: String,
    pub province: Option<Coded>,
    pub city: Option<Coded>,
    pub county: Option<Coded>,
    pub township: Option<Coded>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub code: String,
    pub meaning: Option<&'static str>,
}

/// Where the evaluation was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
}

/// The alert id of a rule on an evaluation: 32 hex digits of XXH3-128 over both.
pub fn alert_id(rule: &str, project_no: &str, assess_number: i8) -> String {
    let mut key = Vec::with_capacity(rule.len() + project_no.len() + 4);
    key.extend_from_slice(rule.as_bytes());
    key.push(0);
    key.extend_from_slice(project_no.as_bytes());
    key.push(0);
    key.extend_from_slice(assess_number.to_string().as_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&key))
}

/// Finds a micro-batch's row by its evaluation key.
pub struct RowIndex<'a> {
    rows: HashMap<(&'a str, i8), usize>,
}

impl<'a> RowIndex<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Self, String> {
        let projects = text(batch, "project_no").ok_or("no project_no column")?;
        let numbers = batch
            .column_by_name("assess_number")
            .and_then(|c| c.as_primitive_opt::<Int8Type>())
            .ok_or("no assess_number column")?;
        let rows = (0..batch.num_rows())
            .filter(|row| projects.is_valid(*row))
            .map(|row| ((projects.value(row), numbers.value(row)), row))
            .collect();
        Ok(Self { rows })
    }

    pub fn get(&self, project_no: &str, assess_number: i8) -> Option<usize> {
        self.rows.get(&(project_no, assess_number)).copied()
    }
}

fn text<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
}

fn string_at(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    text(batch, name)
        .filter(|c| c.is_valid(row))
        .map(|c| c.value(row).to_owned())
}

/// A 6- or 9-digit level code with its name from the division table.
fn region(code: Option<String>) -> Option<Coded> {
    let code = code?;
    let padded = format!("{code:0<12}");
    let name = RegionCode::parse(&padded)
        .ok()
        .and_then(|c| RegionTable::shipped().ok()?.get(&c).map(|r| r.name.clone()));
    Some(Coded { code, name })
}

impl Alert {
    /// The alert of `fired` on row `row` of a micro-batch (the `evaluations` schema).
    pub fn from_row(
        batch: &RecordBatch,
        row: usize,
        fired: &Fired<'_>,
        detected_at_us: i64,
        policies: &Policies,
    ) -> Self {
        let given_us = batch
            .column_by_name("assessed_at")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .map_or(detected_at_us, |c| c.value(row));
        let level = batch
            .column_by_name("satisfaction")
            .and_then(|c| c.as_primitive_opt::<Int8Type>())
            .map_or(0, |c| c.value(row));
        let channel_code = batch
            .column_by_name("channel_code")
            .and_then(|c| c.as_primitive_opt::<Int8Type>())
            .map_or(0, |c| c.value(row));
        let tags = batch
            .column_by_name("tags")
            .and_then(|c| c.as_list_opt::<i32>())
            .map(|list: &GenericListArray<i32>| {
                let values = list.value(row);
                let values = values.as_string::<i32>();
                (0..values.len())
                    .filter(|i| values.is_valid(*i))
                    .map(|i| {
                        let code = values.value(i).to_owned();
                        let meaning = code.parse().ok().and_then(crate::tags::meaning);
                        Tag { code, meaning }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let partition = batch
            .column_by_name("kafka_partition")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .map_or(-1, |c| c.value(row));
        let offset = batch
            .column_by_name("kafka_offset")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .map_or(-1, |c| c.value(row));
        let staff = string_at(batch, "staff_id", row).map(|code| Coded {
            code,
            name: string_at(batch, "staff_name", row),
        });
        let area_code = string_at(batch, "area_code", row).unwrap_or_default();
        let forward = RegionCode::parse(&area_code).map_or_else(
            |_| policies.default_policy().policy.deadlines.forward,
            |code| policies.for_region(&code).policy.deadlines.forward,
        );
        let forward_by = forward
            .ends(Calendar::official(), given_us)
            .map_err(|error| tracing::warn!(%error, "no forwarding deadline for an alert"))
            .ok()
            .map(format_cst);
        Alert {
            id: alert_id(fired.rule, fired.project_no, fired.assess_number),
            rule: fired.rule.to_owned(),
            severity: fired.severity.to_owned(),
            related_reviews: fired.related_reviews,
            project_no: fired.project_no.to_owned(),
            assess_number: fired.assess_number,
            level,
            level_name: match level {
                1 => "非常不满意",
                2 => "不满意",
                3 => "基本满意",
                4 => "比较满意",
                _ => "非常满意",
            },
            item: Coded {
                code: string_at(batch, "task_code", row).unwrap_or_default(),
                name: string_at(batch, "task_name", row),
            },
            department: Coded {
                code: string_at(batch, "dept_code", row).unwrap_or_default(),
                name: string_at(batch, "dept_name", row),
            },
            region: Regions {
                area_code,
                province: region(string_at(batch, "province_code", row)),
                city: region(string_at(batch, "city_code", row)),
                county: region(string_at(batch, "county_code", row)),
                township: region(string_at(batch, "township_code", row)),
            },
            channel: Coded {
                code: channel_code.to_string(),
                name: string_at(batch, "channel", row),
            },
            staff,
            tags,
            text: string_at(batch, "text", row),
            evaluator_key: string_at(batch, "evaluator_key", row),
            given_at: format_cst(given_us),
            detected_at: format_cst(detected_at_us),
            forward_by,
            forward_within: forward.to_string(),
            source: Source { partition, offset },
        }
    }

    /// The Kafka key: the department's code, so a department's alerts stay in order on one partition.
    pub fn key(&self) -> &str {
        &self.department.code
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_stable_and_distinct() {
        let a = super::alert_id("bad_review", "P1", 1);
        assert_eq!(a, super::alert_id("bad_review", "P1", 1));
        assert_eq!(a.len(), 32);
        for other in [
            super::alert_id("staff_repeat", "P1", 1),
            super::alert_id("bad_review", "P1", 2),
            super::alert_id("bad_review", "P11", 1),
            // The separator keeps rule and case apart.
            super::alert_id("bad_reviewP", "1", 1),
        ] {
            assert_ne!(a, other);
        }
    }
}
