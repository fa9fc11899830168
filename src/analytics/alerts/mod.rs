//! Real-time alert rules: DataFusion SQL (`queries/alerts/*.sql`) over each deduplicated micro-batch
//! of accepted bad reviews, as it passes through the engine and before the Parquet flush.
//!
//! One long-lived [`SessionContext`] holds two tables whose contents are swapped, not re-registered:
//! `batch` (the micro-batch, the `evaluations` columns) and `recent_bad_reviews` (the bad reviews of
//! the last [`HISTORY_DAYS`] days this instance knows of: the lake's at start, then every
//! micro-batch's). Both are `Live` tables, read when a plan runs rather than when it is made, so
//! each rule is planned once, physical plan included, at start; per micro-batch the plan's
//! run-time state is reset ([`reset_plan_states`], the way DataFusion re-runs a recursive query's
//! plan) and it runs again. Planning a rule cost more than running it on a micro-batch of a few
//! hundred rows (benches/RESULTS.md §16). So a rule must not read the clock (`now()`,
//! `current_date`): planning folds it into a constant, which would stay the start's. Rules measure
//! time by the evaluations' own `assessed_at`.
//!
//! A rule returns `rule, severity, related_reviews, project_no, assess_number`; the alert's body
//! comes from the evaluation's row ([`alert::Alert::from_row`]), its forwarding deadline from the
//! region's policy ([`crate::policy`]). What reaches consumers, and how a
//! storm is bounded, is [`crate::sink::alerts`].

pub mod alert;
mod history;
pub mod hotspot;
pub mod outbox;

use crate::lake::LakeRoot;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, Int8Type, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

pub use alert::Alert;
use history::History;

use crate::policy::Policies;
use crate::sink::parquet::evaluations_schema;

/// How far back `recent_bad_reviews` reaches: the longest window a shipped rule looks at.
pub const HISTORY_DAYS: i64 = 30;

/// One alert rule: a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct RuleSource {
    pub name: &'static str,
    pub sql: &'static str,
}

/// The rules shipped in `queries/alerts/`, compiled into the binary so a deployment cannot lose them.
pub const RULES: &[RuleSource] = &[
    RuleSource {
        name: "bad_review",
        sql: include_str!("../../../queries/alerts/bad_review.sql"),
    },
    RuleSource {
        name: "staff_repeat",
        sql: include_str!("../../../queries/alerts/staff_repeat.sql"),
    },
    RuleSource {
        name: "malicious_reviewer",
        sql: include_str!("../../../queries/alerts/malicious_reviewer.sql"),
    },
    RuleSource {
        name: "supplementary_bad_review",
        sql: include_str!("../../../queries/alerts/supplementary_bad_review.sql"),
    },
];

/// Errors of the alert rules.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert rule {rule}: {source}")]
    Rule {
        rule: &'static str,
        source: DataFusionError,
    },
    #[error("alert rule {rule} returned {what}")]
    Output { rule: &'static str, what: String },
    #[error("alert history: {0}")]
    History(DataFusionError),
}

struct Rule {
    name: &'static str,
    /// Planned once; reset before each run (see the module's documentation).
    plan: Arc<dyn ExecutionPlan>,
}

/// A table whose rows are whatever it holds when a plan that scans it runs (a [`PartitionStream`]
/// of one partition), so a physical plan made once reads each micro-batch.
#[derive(Debug)]
struct Live {
    schema: SchemaRef,
    batches: std::sync::RwLock<Vec<RecordBatch>>,
}

impl Live {
    fn new(schema: SchemaRef) -> Arc<Self> {
        Arc::new(Self {
            schema,
            batches: std::sync::RwLock::new(Vec::new()),
        })
    }

    fn set(&self, batches: Vec<RecordBatch>) {
        // A poisoned lock only means a writer panicked mid-assignment of a whole `Vec`: the value
        // is replaced here anyway.
        *self.batches.write().unwrap_or_else(|e| e.into_inner()) = batches;
    }

    fn register(self: &Arc<Self>, ctx: &SessionContext, name: &str) -> Result<(), DataFusionError> {
        let partition: Arc<dyn PartitionStream> = self.clone();
        let table = StreamingTable::try_new(self.schema.clone(), vec![partition])?;
        ctx.register_table(name, Arc::new(table))?;
        Ok(())
    }
}

impl PartitionStream for Live {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self
            .batches
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}

/// The alert rules with their session and the history they look back on.
pub struct AlertRules {
    ctx: SessionContext,
    batch: Arc<Live>,
    recent: Arc<Live>,
    rules: Vec<Rule>,
    history: History,
    /// Each alert's forwarding deadline comes from its region's policy.
    policies: Arc<Policies>,
}

impl AlertRules {
    /// Plans every rule once. `history` is what `recent_bad_reviews` starts with (see
    /// [`load_history`]).
    pub async fn new(
        sources: &[RuleSource],
        history: Vec<RecordBatch>,
        policies: Arc<Policies>,
    ) -> Result<Self, AlertError> {
        // One partition: a micro-batch of a few hundred rows gains nothing from being split across
        // cores. No dynamic filters: a plan that holds one cannot run twice (`reset_plan_states`).
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let ctx = SessionContext::new_with_config(config);
        let batch = Live::new(evaluations_schema());
        let recent = Live::new(history::schema());
        batch.register(&ctx, "batch").map_err(AlertError::History)?;
        recent
            .register(&ctx, "recent_bad_reviews")
            .map_err(AlertError::History)?;
        let mut rules = Vec::with_capacity(sources.len());
        for source in sources {
            let fail = |e| AlertError::Rule {
                rule: source.name,
                source: e,
            };
            let plan = ctx
                .sql(source.sql)
                .await
                .map_err(fail)?
                .create_physical_plan()
                .await
                .map_err(fail)?;
            rules.push(Rule {
                name: source.name,
                plan,
            });
        }
        let mut history_rows = History::default();
        for batch in history {
            history_rows.append(&batch).map_err(AlertError::History)?;
        }
        Ok(Self {
            ctx,
            batch,
            recent,
            rules,
            history: history_rows,
            policies,
        })
    }

    /// How many bad reviews the rules look back on.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Takes in bad reviews read from the lake again (see [`load_history`]): those this instance
    /// holds already are skipped, the others (committed by other instances of the group) join
    /// the look-back. Returns how many were new.
    pub fn absorb(&mut self, history: &[RecordBatch], now_us: i64) -> Result<usize, AlertError> {
        let before = self.history.len();
        for batch in history {
            self.history.append(batch).map_err(AlertError::History)?;
        }
        self.history
            .evict_before(now_us - HISTORY_DAYS * 86_400_000_000);
        Ok(self.history.len().saturating_sub(before))
    }

    /// Runs every rule over one micro-batch of accepted evaluations (the `evaluations` schema; good
    /// reviews are ignored by the rules), then adds its bad reviews to the history. `detected_at_us`
    /// is now, in UTC microseconds.
    pub async fn evaluate(
        &mut self,
        batch: &RecordBatch,
        detected_at_us: i64,
    ) -> Result<Vec<Alert>, AlertError> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        self.batch.set(vec![batch.clone()]);
        self.recent.set(self.history.batches());
        let rows = alert::RowIndex::new(batch).map_err(|what| AlertError::Output {
            rule: "batch",
            what,
        })?;
        let mut alerts = Vec::new();
        for rule in &self.rules {
            let fail = |source| AlertError::Rule {
                rule: rule.name,
                source,
            };
            let plan = reset_plan_states(rule.plan.clone()).map_err(fail)?;
            let output = collect(plan, self.ctx.task_ctx()).await.map_err(fail)?;
            for fired in output {
                read_fired(rule.name, &fired, |fired| {
                    if let Some(row) = rows.get(fired.project_no, fired.assess_number) {
                        alerts.push(Alert::from_row(
                            batch,
                            row,
                            &fired,
                            detected_at_us,
                            &self.policies,
                        ));
                    }
                })?;
            }
        }
        self.batch.set(Vec::new());
        self.history.append(batch).map_err(AlertError::History)?;
        self.history
            .evict_before(detected_at_us - HISTORY_DAYS * 86_400_000_000);
        Ok(alerts)
    }
}

/// One row of a rule's output.
#[derive(Debug, Clone)]
pub struct Fired<'a> {
    pub rule: &'a str,
    pub severity: &'a str,
    pub related_reviews: i64,
    pub project_no: &'a str,
    pub assess_number: i8,
}

fn read_fired(
    rule: &'static str,
    batch: &RecordBatch,
    mut each: impl FnMut(Fired<'_>),
) -> Result<(), AlertError> {
    let missing = |column: &str| AlertError::Output {
        rule,
        what: format!(
            "no {column} column of the expected type (see queries/alerts/bad_review.sql)"
        ),
    };
    let text = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let (names, severities, projects) = (text("rule")?, text("severity")?, text("project_no")?);
    let related = batch
        .column_by_name("related_reviews")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| missing("related_reviews"))?;
    let numbers = batch
        .column_by_name("assess_number")
        .and_then(|c| c.as_primitive_opt::<Int8Type>())
        .ok_or_else(|| missing("assess_number"))?;
    for row in 0..batch.num_rows() {
        if names.is_null(row) || projects.is_null(row) || numbers.is_null(row) {
            continue;
        }
        each(Fired {
            rule: names.value(row),
            severity: if severities.is_null(row) {
                "medium"
            } else {
                severities.value(row)
            },
            related_reviews: if related.is_null(row) {
                1
            } else {
                related.value(row)
            },
            project_no: projects.value(row),
            assess_number: numbers.value(row),
        });
    }
    Ok(())
}

/// The bad reviews of the last [`HISTORY_DAYS`] days in the lake at `root` (all partitions: an
/// evaluator's reviews spread over them), for [`AlertRules::new`]. An empty lake has none.
pub async fn load_history(root: &LakeRoot, now_us: i64) -> Result<Vec<RecordBatch>, AlertError> {
    if !root
        .has_objects(crate::sink::parquet::EVALUATIONS_TABLE)
        .await
        .map_err(|e| AlertError::History(DataFusionError::External(Box::new(e))))?
    {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    super::register_lake(&ctx, root)
        .await
        .map_err(AlertError::History)?;
    let since_us = now_us - HISTORY_DAYS * 86_400_000_000;
    // The day folder first (pruning whole folders), then the exact instant.
    let since_day = crate::sink::parquet::format_day(crate::sink::parquet::cst_day(since_us) - 1);
    let sql = format!(
        "SELECT {} FROM evaluations WHERE bad_review AND dt >= '{since_day}' \
         AND assessed_at >= to_timestamp_micros({since_us})",
        history::COLUMNS.join(", ")
    );
    ctx.sql(&sql)
        .await
        .map_err(AlertError::History)?
        .collect()
        .await
        .map_err(AlertError::History)
}

#[cfg(test)]
mod tests {
    /// Plans are made once (see the module's documentation): a clock read in a rule would be the
    /// start's forever.
    #[test]
    fn no_shipped_rule_reads_the_clock() {
        for rule in super::RULES {
            let sql = rule.sql.to_lowercase();
            for clock in ["now(", "current_timestamp", "current_date", "current_time"] {
                assert!(
                    !sql.contains(clock),
                    "{} reads the clock ({clock})",
                    rule.name
                );
            }
        }
    }
}
