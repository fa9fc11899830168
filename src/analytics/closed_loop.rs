//! The closed loop of a bad review (评价→反馈→整改→监督, DOMAIN.md §3): its deadlines from its
//! region's policy on the working-day calendar, when each step happened, on time or late, its state,
//! and the alerts due when a deadline passes.
//!
//! Everything here is a pure function of the lake's rows and a clock (`as_of`): the same lake and
//! the same `as_of` give the same `bad_reviews` table and the same alerts, so a replay gives the same
//! answers. [`assess`] computes one review's deadlines and state; [`due_alerts`] the alerts whose
//! moment has come. [`rebuild`] writes `tables/bad_reviews/bad_reviews.parquet` and adds the reviews
//! the review procedure found mistaken or malicious to `exclusions`, which every rate and ranking
//! then drops, retroactively.
//!
//! Deadlines and their anchors (the policy's keys, `deploy/policies/default.toml`):
//!
//! | deadline | counts from |
//! |---|---|
//! | `forward` | the review |
//! | `first_contact` | the forwarding |
//! | `reply` | the review (001 §19: on receiving it) |
//! | `rectify_simple` / `rectify_complex` (+ `extension` once extended) | the forwarding, else the review |
//! | `report_back` | the rectification |
//! | `escalate_deputy_leader`, `escalate_main_leader` | the review, while unrectified |
//! | `no_reevaluation` (revisit) | the rectification; a new bad review after it is due at once |
//!
//! A rectified review is revisited when its evaluator does not evaluate again within
//! `no_reevaluation` or gives a new bad review (000 三(三)), and also, whatever the re-evaluation,
//! when it falls in the revisit sample: `random_share` of all reviews (004 一(二)4) and
//! `real_name_share` of real-name ones (001 §19), drawn from the case number so a replay draws the
//! same ones ([`sampled_for_revisit`]).
//! | `appeal`, `review_apply` | the forwarding (the department is told) |
//! | `appeal_audit` / `review_decide` | the appeal / the review application |

use crate::lake::LakeRoot;

use serde::{Deserialize, Serialize};

use super::exclusions::{Exclusion, ExclusionReason};
use super::session::bad_reviews_schema;
use super::{collect, deserialize_rows, open, put_file, sql, AnalyticsError};
use crate::policy::span::{cst_month, format_cst};
use crate::policy::{Calendar, Deadlines, Policies, Revisit, Span};
use crate::region::RegionCode;

/// The table's name (a derived table under `tables/`).
pub const TABLE: &str = "bad_reviews";

/// One bad review with its steps, as `queries/bad_review_steps.sql` returns it (times in UTC
/// microseconds).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Review {
    pub project_no: String,
    pub assess_number: i8,
    pub satisfaction: i8,
    pub area_code: String,
    pub province_code: String,
    pub city_code: Option<String>,
    pub county_code: Option<String>,
    pub dept_code: String,
    pub dept_name: Option<String>,
    pub task_code: String,
    pub task_name: String,
    pub staff_id: Option<String>,
    pub channel: String,
    #[serde(rename = "assessed_at")]
    pub given_at: i64,
    pub real_name: bool,
    pub forwarded_at: Option<i64>,
    pub complex: Option<bool>,
    pub contacted_at: Option<i64>,
    pub replied_at: Option<i64>,
    pub extended_at: Option<i64>,
    pub rectified_at: Option<i64>,
    pub reported_back_at: Option<i64>,
    pub revisited_at: Option<i64>,
    pub revisit_satisfaction: Option<i8>,
    pub appealed_at: Option<i64>,
    pub appeal_audited_at: Option<i64>,
    pub appeal_decision: Option<String>,
    pub review_applied_at: Option<i64>,
    pub review_decided_at: Option<i64>,
    pub review_decision: Option<String>,
    pub re_evaluated_at: Option<i64>,
    pub re_satisfaction: Option<i8>,
    /// The reason the `exclusions` table gives, if it lists the review.
    pub excluded_as: Option<String>,
}

impl Review {
    /// Found mistaken (误评) or malicious (恶意差评) by the review procedure, or listed in the
    /// `exclusions` table.
    pub fn excluded(&self) -> Option<ExclusionReason> {
        match self.review_decision.as_deref() {
            Some("mistaken") => Some(ExclusionReason::Mistaken),
            Some("malicious") => Some(ExclusionReason::Malicious),
            _ => self
                .excluded_as
                .as_deref()
                .map(|r| ExclusionReason::from_code(r).unwrap_or(ExclusionReason::Other)),
        }
    }
}

/// A review's deadlines (UTC microseconds, 24:00 CST of each period's last day); `None` for a
/// deadline whose anchor has not happened, or whose period the calendar cannot count yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    pub forward_by: Option<i64>,
    pub first_contact_by: Option<i64>,
    pub reply_by: Option<i64>,
    pub rectify_by: Option<i64>,
    pub report_back_by: Option<i64>,
    pub escalate_deputy_at: Option<i64>,
    pub escalate_main_at: Option<i64>,
    pub revisit_due_at: Option<i64>,
    pub appeal_by: Option<i64>,
    pub appeal_audit_by: Option<i64>,
    pub review_apply_by: Option<i64>,
    pub review_decide_by: Option<i64>,
    /// A period the calendar has no data for (the year named), if any.
    pub undecidable: Option<String>,
}

/// Where a review falls in [0, 1) for the revisit shares: the same review always draws the same
/// number, so the sample is deterministic (a replay revisits the same reviews).
pub fn revisit_draw(project_no: &str, assess_number: i8) -> f64 {
    let hash = xxhash_rust::xxh3::xxh3_64_with_seed(
        project_no.as_bytes(),
        0x7e71_0000 + assess_number as u64,
    );
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a rectified review is in the revisit sample: the random share of all (004 一(二)4: at
/// least 20 %) or, for a real-name review, the real-name share (001 §19: 100 %). Pure.
pub fn sampled_for_revisit(review: &Review, revisit: &Revisit) -> bool {
    let draw = revisit_draw(&review.project_no, review.assess_number);
    draw < revisit.random_share.0 || (review.real_name && draw < revisit.real_name_share.0)
}

/// One review's deadlines under `deadlines` and the `revisit` rules. Pure.
pub fn assess(
    review: &Review,
    deadlines: &Deadlines,
    revisit: &Revisit,
    calendar: &Calendar,
) -> Due {
    let no_reevaluation = &revisit.no_reevaluation;
    let mut due = Due::default();
    let mut end = |span: &Span, from: Option<i64>| -> Option<i64> {
        let from = from?;
        match span.ends(calendar, from) {
            Ok(at) => Some(at),
            Err(error) => {
                due.undecidable.get_or_insert_with(|| error.to_string());
                None
            }
        }
    };
    let given = Some(review.given_at);
    let told = review.forwarded_at.or(given);
    let forward_by = end(&deadlines.forward, given);
    let first_contact_by = end(&deadlines.first_contact, review.forwarded_at);
    let reply_by = end(&deadlines.reply, given);
    let rectify = if review.complex == Some(true) {
        &deadlines.rectify_complex
    } else {
        &deadlines.rectify_simple
    };
    let mut rectify_by = end(rectify, told);
    if review.extended_at.is_some() {
        // The extension runs on from the last day of the period it extends.
        rectify_by = rectify_by.and_then(|by| end(&deadlines.extension, Some(by - 1)));
    }
    let report_back_by = end(&deadlines.report_back, review.rectified_at);
    let escalate_deputy_at = end(&deadlines.escalate_deputy_leader, given);
    let escalate_main_at = end(&deadlines.escalate_main_leader, given);
    let revisit_due_at = match (review.rectified_at, review.re_evaluated_at) {
        // Evaluated again after the rectification: a new bad review calls for a revisit at once
        // (000 三(三)); a good one closes the loop, unless the review is in the revisit sample.
        (Some(_), Some(again))
            if review.re_satisfaction.is_some_and(|s| s <= 2)
                && Some(again) >= review.rectified_at =>
        {
            Some(again)
        }
        (Some(rectified), Some(again)) if again >= rectified => {
            if sampled_for_revisit(review, revisit) {
                end(no_reevaluation, Some(rectified))
            } else {
                None
            }
        }
        // Not evaluated again within the period: revisited (000 三(三)).
        (Some(rectified), _) => end(no_reevaluation, Some(rectified)),
        (None, _) => None,
    };
    let appeal_by = end(&deadlines.appeal, review.forwarded_at);
    let appeal_audit_by = end(&deadlines.appeal_audit, review.appealed_at);
    let review_apply_by = end(&deadlines.review_apply, review.forwarded_at);
    let review_decide_by = end(&deadlines.review_decide, review.review_applied_at);
    Due {
        forward_by,
        first_contact_by,
        reply_by,
        rectify_by,
        report_back_by,
        escalate_deputy_at,
        escalate_main_at,
        revisit_due_at,
        appeal_by,
        appeal_audit_by,
        review_apply_by,
        review_decide_by,
        undecidable: due.undecidable,
    }
}

/// Whether a step was on time: `Some(true)` done by its deadline, `Some(false)` done late or not
/// done when the deadline has passed, `None` while it may still be. Pure.
pub fn on_time(done: Option<i64>, by: Option<i64>, as_of: i64) -> Option<bool> {
    match (done, by) {
        (Some(done), Some(by)) => Some(done <= by),
        (None, Some(by)) if by <= as_of => Some(false),
        _ => None,
    }
}

/// The alerts of the closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopRule {
    OverdueForward,
    OverdueReply,
    OverdueRectification,
    EscalateDeputyLeader,
    EscalateMainLeader,
    RevisitDue,
}

impl LoopRule {
    pub fn name(self) -> &'static str {
        match self {
            LoopRule::OverdueForward => "overdue_forward",
            LoopRule::OverdueReply => "overdue_reply",
            LoopRule::OverdueRectification => "overdue_rectification",
            LoopRule::EscalateDeputyLeader => "escalate_deputy_leader",
            LoopRule::EscalateMainLeader => "escalate_main_leader",
            LoopRule::RevisitDue => "revisit_due",
        }
    }

    pub fn severity(self) -> &'static str {
        match self {
            LoopRule::EscalateMainLeader | LoopRule::EscalateDeputyLeader => "high",
            _ => "medium",
        }
    }
}

/// The alerts whose moment has come by `as_of`: each rule's moment is its deadline, and it fires
/// when the step it waits for had not happened by then. An excluded review raises none. Pure.
pub fn due_alerts(review: &Review, due: &Due, as_of: i64) -> Vec<(LoopRule, i64)> {
    if review.excluded().is_some() {
        return Vec::new();
    }
    let waits = [
        (
            LoopRule::OverdueForward,
            due.forward_by,
            review.forwarded_at,
        ),
        (LoopRule::OverdueReply, due.reply_by, review.replied_at),
        (
            LoopRule::OverdueRectification,
            due.rectify_by,
            review.rectified_at,
        ),
        (
            LoopRule::EscalateDeputyLeader,
            due.escalate_deputy_at,
            review.rectified_at,
        ),
        (
            LoopRule::EscalateMainLeader,
            due.escalate_main_at,
            review.rectified_at,
        ),
        (
            LoopRule::RevisitDue,
            due.revisit_due_at,
            review.revisited_at,
        ),
    ];
    waits
        .into_iter()
        .filter_map(|(rule, at, done)| {
            let at = at?;
            (at <= as_of && done.is_none_or(|done| done > at)).then_some((rule, at))
        })
        .collect()
}

/// Where a bad review stands.
pub fn state(review: &Review) -> &'static str {
    if review.excluded().is_some() {
        "excluded"
    } else if review.revisited_at.is_some() {
        "revisited"
    } else if review.rectified_at.is_some() {
        "rectified"
    } else {
        "open"
    }
}

/// One row of the `bad_reviews` table; its fields are the columns of [`bad_reviews_schema`].
#[derive(Debug, Clone, Serialize)]
pub struct BadReviewRow {
    pub project_no: String,
    pub assess_number: i8,
    pub satisfaction: i8,
    pub month: String,
    pub area_code: String,
    pub province_code: String,
    pub city_code: Option<String>,
    pub county_code: Option<String>,
    pub dept_code: String,
    pub dept_name: Option<String>,
    pub task_code: String,
    pub task_name: String,
    pub staff_id: Option<String>,
    pub channel: String,
    pub given_at: i64,
    pub real_name: bool,
    pub complex: bool,
    pub policy: String,
    pub state: &'static str,
    pub forward_by: Option<i64>,
    pub forwarded_at: Option<i64>,
    pub forwarded_on_time: Option<bool>,
    pub first_contact_by: Option<i64>,
    pub contacted_at: Option<i64>,
    pub contacted_on_time: Option<bool>,
    pub reply_by: Option<i64>,
    pub replied_at: Option<i64>,
    pub replied_on_time: Option<bool>,
    pub rectify_by: Option<i64>,
    pub rectified_at: Option<i64>,
    pub rectified_on_time: Option<bool>,
    pub report_back_by: Option<i64>,
    pub reported_back_at: Option<i64>,
    pub reported_back_on_time: Option<bool>,
    pub escalate_deputy_at: Option<i64>,
    pub escalate_main_at: Option<i64>,
    pub revisit_due_at: Option<i64>,
    pub revisited_at: Option<i64>,
    pub revisit_satisfaction: Option<i8>,
    pub appealed_at: Option<i64>,
    pub appeal_decision: Option<String>,
    pub review_decided_at: Option<i64>,
    pub review_decision: Option<String>,
    pub excluded: bool,
}

/// A closed-loop alert as it goes on the alerts topic (`schemas/alert.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopAlert {
    pub id: String,
    pub rule: String,
    pub severity: String,
    pub project_no: String,
    pub assess_number: i8,
    pub department: super::alerts::alert::Coded,
    pub area_code: String,
    pub given_at: String,
    /// The deadline that passed.
    pub deadline: String,
    /// The period it ended, e.g. "2 working days", and the policy file it comes from.
    pub period: String,
    pub policy: String,
    pub detected_at: String,
}

impl super::alerts::outbox::Identified for LoopAlert {
    fn id(&self) -> &str {
        &self.id
    }
}

impl LoopAlert {
    /// The Kafka key: the department's code, like every alert of a review.
    pub fn key(&self) -> &str {
        &self.department.code
    }
}

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoopReport {
    pub bad_reviews: usize,
    pub open: usize,
    pub excluded: usize,
    /// Exclusions added to the `exclusions` table by this rebuild.
    pub exclusions_added: usize,
    /// Reviews with a deadline the calendar cannot count yet.
    pub undecidable: usize,
    /// Every alert due by `as_of` (sent or not; see [`super::alerts::outbox`]).
    #[serde(skip)]
    pub alerts: Vec<LoopAlert>,
}

/// The period of a rule under a policy, for the alert's text.
fn period_of(
    rule: LoopRule,
    review: &Review,
    deadlines: &Deadlines,
    no_reevaluation: &Span,
) -> String {
    match rule {
        LoopRule::OverdueForward => deadlines.forward.to_string(),
        LoopRule::OverdueReply => deadlines.reply.to_string(),
        LoopRule::OverdueRectification if review.complex == Some(true) => {
            deadlines.rectify_complex.to_string()
        }
        LoopRule::OverdueRectification => deadlines.rectify_simple.to_string(),
        LoopRule::EscalateDeputyLeader => deadlines.escalate_deputy_leader.to_string(),
        LoopRule::EscalateMainLeader => deadlines.escalate_main_leader.to_string(),
        LoopRule::RevisitDue => no_reevaluation.to_string(),
    }
}

/// Rebuilds `bad_reviews` as of `as_of`, adds new exclusions, and returns every alert due.
pub async fn rebuild(
    lake_root: &LakeRoot,
    as_of: i64,
    policies: &Policies,
) -> Result<LoopReport, AnalyticsError> {
    let ctx = open(lake_root).await?;
    let (_, batches) = collect(&ctx, sql::BAD_REVIEW_STEPS).await?;
    let reviews: Vec<Review> = deserialize_rows(&batches)?;
    let calendar = Calendar::official();
    let mut report = LoopReport::default();
    let mut rows = Vec::with_capacity(reviews.len());
    let mut exclusions = Vec::new();
    for review in &reviews {
        let resolved = RegionCode::parse(&review.area_code).map_or_else(
            |_| policies.default_policy(),
            |code| policies.for_region(&code),
        );
        let policy = &resolved.policy;
        let policy_file = resolved.files.last().cloned().unwrap_or_default();
        let due = assess(review, &policy.deadlines, &policy.revisit, calendar);
        if due.undecidable.is_some() {
            report.undecidable += 1;
        }
        let state = state(review);
        report.bad_reviews += 1;
        report.open += usize::from(state == "open");
        report.excluded += usize::from(review.excluded().is_some());
        if let (Some(reason), Some(decided), None) = (
            review.excluded(),
            review.review_decided_at,
            &review.excluded_as,
        ) {
            exclusions.push(Exclusion {
                project_no: review.project_no.clone(),
                assess_number: review.assess_number,
                reason,
                decided_at_us: decided,
            });
        }
        for (rule, at) in due_alerts(review, &due, as_of) {
            report.alerts.push(LoopAlert {
                id: super::alerts::alert::alert_id(
                    rule.name(),
                    &review.project_no,
                    review.assess_number,
                ),
                rule: rule.name().to_owned(),
                severity: rule.severity().to_owned(),
                project_no: review.project_no.clone(),
                assess_number: review.assess_number,
                department: super::alerts::alert::Coded {
                    code: review.dept_code.clone(),
                    name: review.dept_name.clone(),
                },
                area_code: review.area_code.clone(),
                given_at: format_cst(review.given_at),
                deadline: format_cst(at),
                period: period_of(
                    rule,
                    review,
                    &policy.deadlines,
                    &policy.revisit.no_reevaluation,
                ),
                policy: policy_file.clone(),
                detected_at: format_cst(as_of),
            });
        }
        rows.push(BadReviewRow {
            project_no: review.project_no.clone(),
            assess_number: review.assess_number,
            satisfaction: review.satisfaction,
            month: cst_month(review.given_at),
            area_code: review.area_code.clone(),
            province_code: review.province_code.clone(),
            city_code: review.city_code.clone(),
            county_code: review.county_code.clone(),
            dept_code: review.dept_code.clone(),
            dept_name: review.dept_name.clone(),
            task_code: review.task_code.clone(),
            task_name: review.task_name.clone(),
            staff_id: review.staff_id.clone(),
            channel: review.channel.clone(),
            given_at: review.given_at,
            real_name: review.real_name,
            complex: review.complex == Some(true),
            policy: policy_file,
            state,
            forward_by: due.forward_by,
            forwarded_at: review.forwarded_at,
            forwarded_on_time: on_time(review.forwarded_at, due.forward_by, as_of),
            first_contact_by: due.first_contact_by,
            contacted_at: review.contacted_at,
            contacted_on_time: on_time(review.contacted_at, due.first_contact_by, as_of),
            reply_by: due.reply_by,
            replied_at: review.replied_at,
            replied_on_time: on_time(review.replied_at, due.reply_by, as_of),
            rectify_by: due.rectify_by,
            rectified_at: review.rectified_at,
            rectified_on_time: on_time(review.rectified_at, due.rectify_by, as_of),
            report_back_by: due.report_back_by,
            reported_back_at: review.reported_back_at,
            reported_back_on_time: on_time(review.reported_back_at, due.report_back_by, as_of),
            escalate_deputy_at: due.escalate_deputy_at,
            escalate_main_at: due.escalate_main_at,
            revisit_due_at: due.revisit_due_at,
            revisited_at: review.revisited_at,
            revisit_satisfaction: review.revisit_satisfaction,
            appealed_at: review.appealed_at,
            appeal_decision: review.appeal_decision.clone(),
            review_decided_at: review.review_decided_at,
            review_decision: review.review_decision.clone(),
            excluded: review.excluded().is_some(),
        });
    }
    report.exclusions_added = add_exclusions(lake_root, &ctx, exclusions).await?;
    let schema = bad_reviews_schema();
    let batch = crate::sink::parquet::serialize_rows(&schema, &rows)?;
    put_file(
        lake_root,
        &format!("{}/{TABLE}/{TABLE}.parquet", super::session::TABLES_FOLDER),
        &schema,
        &[batch],
    )
    .await?;
    Ok(report)
}

/// Appends the exclusions the table does not hold yet; returns how many.
async fn add_exclusions(
    lake_root: &LakeRoot,
    ctx: &datafusion::prelude::SessionContext,
    found: Vec<Exclusion>,
) -> Result<usize, AnalyticsError> {
    if found.is_empty() {
        return Ok(0);
    }
    #[derive(Deserialize)]
    struct Key {
        project_no: String,
        assess_number: i8,
    }
    let (_, batches) = collect(ctx, "SELECT project_no, assess_number FROM exclusions").await?;
    let held: std::collections::BTreeSet<(String, i8)> = deserialize_rows::<Key>(&batches)?
        .into_iter()
        .map(|k| (k.project_no, k.assess_number))
        .collect();
    let new: Vec<Exclusion> = found
        .into_iter()
        .filter(|e| !held.contains(&(e.project_no.clone(), e.assess_number)))
        .collect();
    let count = new.len();
    super::exclusions::append(lake_root, &new).await?;
    Ok(count)
}

#[cfg(test)]
mod tests;
