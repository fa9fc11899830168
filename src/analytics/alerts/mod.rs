//! Real-time alert rules: DataFusion SQL (`queries/alerts/*.sql`) over each deduplicated micro-batch
//! of accepted bad reviews, as it passes through the engine and before the Parquet flush.
//!
//! One long-lived [`SessionContext`] holds two in-memory tables whose contents are swapped, not
//! re-registered: `batch` (the micro-batch, the `evaluations` columns) and `recent_bad_reviews`
//! (the bad reviews of the last [`HISTORY_DAYS`] days this instance knows of: the lake's at start,
//! then every micro-batch's). Each rule's SQL is parsed, analysed and optimised once, at start;
//! per micro-batch only the physical plan is made (it reads the tables' current contents) and run.
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
use arrow::datatypes::{Int64Type, Int8Type};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;

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
    /// Optimised once; the physical plan is made per micro-batch.
    plan: LogicalPlan,
}

/// The alert rules with their session and the history they look back on.
pub struct AlertRules {
    ctx: SessionContext,
    batch: Arc<MemTable>,
    recent: Arc<MemTable>,
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
        let ctx = SessionContext::new();
        let batch = Arc::new(
            MemTable::try_new(evaluations_schema(), vec![vec![]]).map_err(AlertError::History)?,
        );
        let recent = Arc::new(
            MemTable::try_new(history::schema(), vec![vec![]]).map_err(AlertError::History)?,
        );
        ctx.register_table("batch", batch.clone())
            .map_err(AlertError::History)?;
        ctx.register_table("recent_bad_reviews", recent.clone())
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
                .into_optimized_plan()
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
        *self.batch.batches[0].write().await = vec![batch.clone()];
        *self.recent.batches[0].write().await = self.history.batches();
        let rows = alert::RowIndex::new(batch).map_err(|what| AlertError::Output {
            rule: "batch",
            what,
        })?;
        let state = self.ctx.state();
        let mut alerts = Vec::new();
        for rule in &self.rules {
            let fail = |source| AlertError::Rule {
                rule: rule.name,
                source,
            };
            let plan = state
                .query_planner()
                .create_physical_plan(&rule.plan, &state)
                .await
                .map_err(fail)?;
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
        *self.batch.batches[0].write().await = Vec::new();
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
