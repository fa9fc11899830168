//! Analytics beside the ingest: every `alerts.hotspots_every`, refresh the derived tables of the
//! lake ([`crate::analytics::refresh`], the default evaluations by region policy,
//! [`crate::analytics::defaults`], the closed loop of every bad review,
//! [`crate::analytics::closed_loop`]) and announce the hotspots that opened or closed since the
//! last round ([`crate::analytics::alerts::hotspot`]) and the closed loop's overdue, escalation and
//! revisit alerts, each once ([`crate::analytics::alerts::outbox`]). A failed round is logged and retried at the
//! next one; it never stops the ingest.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::analytics::alerts::hotspot::Announcements;
use crate::analytics::alerts::outbox::SentOnce;
use crate::analytics::closed_loop::LoopAlert;
use crate::config::IngestConfig;
use crate::lake::LakeRoot;
use crate::policy::Policies;
use crate::sink::alerts::AlertSink;
use crate::telemetry::Stats;

use super::EngineError;

/// Starts the background rounds, unless alerts or the schedule are off.
pub fn background_analytics(
    config: &IngestConfig,
    root: &LakeRoot,
    stats: Arc<Stats>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = config.alerts.hotspots_every;
    if !config.alerts.enabled || every.is_zero() {
        return None;
    }
    let sink = match AlertSink::from_config(&config.kafka, &config.alerts) {
        Ok(sink) => sink,
        Err(error) => {
            tracing::warn!(%error, "hotspot alerts are off: no producer");
            return None;
        }
    };
    let policies = match config.policy.load() {
        Ok(policies) => policies,
        Err(error) => {
            tracing::warn!(%error, "derived tables are off: the region policies do not load");
            return None;
        }
    };
    let root = root.clone();
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // immediate: the first round waits one period
        loop {
            ticker.tick().await;
            match analyze_round(&root, &sink, &stats, &policies, super::now_us()).await {
                Ok(sent) => tracing::info!(hotspot_alerts = sent, "derived tables refreshed"),
                Err(error) => {
                    tracing::warn!(%error, "refreshing the derived tables failed; retried next round")
                }
            }
        }
    }))
}

/// Where the closed loop's sent alerts live, under the lake root.
pub const LOOP_STATE_FILE: &str = "_haochaping/alerts/closed_loop.json";

/// Sent ids are kept this long after they were sent: longer than any review stays open.
const LOOP_SENT_KEPT_US: i64 = 400 * 86_400_000_000;

/// One round: refresh the derived tables (rankings …, default evaluations, the closed loop), then
/// announce what is due: hotspots that opened or closed, and the closed loop's overdue, escalation
/// and revisit alerts, each once. Returns how many alerts went out.
pub async fn analyze_round(
    root: &LakeRoot,
    sink: &AlertSink,
    stats: &Stats,
    policies: &Policies,
    now_us: i64,
) -> Result<usize, EngineError> {
    let done = crate::analytics::refresh_all(
        root,
        now_us,
        &crate::analytics::AnalyticsConfig::default(),
        policies,
    )
    .await?;
    let hotspots = announce_hotspots(root, sink, stats, now_us).await?;
    let loops = announce_loop(root, sink, stats, done.closed_loop.alerts, now_us).await?;
    Ok(hotspots + loops)
}

/// The closed loop's alerts due now and never sent: saved, produced, confirmed, marked sent.
async fn announce_loop(
    root: &LakeRoot,
    sink: &AlertSink,
    stats: &Stats,
    due: Vec<LoopAlert>,
    now_us: i64,
) -> Result<usize, EngineError> {
    let mut state = SentOnce::<LoopAlert>::load(root, LOOP_STATE_FILE).await?;
    state.plan(due);
    state.forget_before(now_us - LOOP_SENT_KEPT_US);
    // Saved before anything is produced: a crash from here on re-sends the same alerts.
    state.save(root, LOOP_STATE_FILE).await?;
    if state.outbox.is_empty() {
        return Ok(0);
    }
    let sent = send_confirmed(
        sink,
        stats,
        state.outbox.iter().map(|a| (a.key(), a.rule.as_str(), a)),
    )
    .await?;
    state.mark_sent(now_us);
    state.save(root, LOOP_STATE_FILE).await?;
    Ok(sent)
}

/// Hotspots that opened or closed since the last round: decided and saved, produced, confirmed,
/// the outbox saved empty.
async fn announce_hotspots(
    root: &LakeRoot,
    sink: &AlertSink,
    stats: &Stats,
    now_us: i64,
) -> Result<usize, EngineError> {
    let current = hotspot_rows(root).await?;
    let mut announcements = Announcements::load(root).await?;
    announcements.plan(&current, now_us);
    // Saved before anything is produced: a crash from here on re-sends the same alerts.
    announcements.save(root).await?;
    if announcements.outbox.is_empty() {
        return Ok(0);
    }
    let sent = send_confirmed(
        sink,
        stats,
        announcements
            .outbox
            .iter()
            .map(|a| (a.key(), a.rule.as_str(), a)),
    )
    .await?;
    announcements.outbox.clear();
    announcements.save(root).await?;
    Ok(sent)
}

/// Produces `(key, rule, alert)`s past the rate limit and waits until the broker confirmed them
/// all; returns how many.
async fn send_confirmed<'a, A: serde::Serialize + 'a>(
    sink: &AlertSink,
    stats: &Stats,
    alerts: impl Iterator<Item = (&'a str, &'a str, &'a A)>,
) -> Result<usize, EngineError> {
    let mut deliveries = Vec::new();
    for (key, rule, alert) in alerts {
        deliveries.push(sink.send_unlimited(key, rule, alert, stats).await?);
    }
    let sent = deliveries.len();
    sink.confirm(deliveries).await?;
    Ok(sent)
}

/// The `hotspots` table now, by hotspot id, each row as a JSON object.
async fn hotspot_rows(root: &LakeRoot) -> Result<BTreeMap<String, serde_json::Value>, EngineError> {
    let ctx = crate::analytics::session::open(root)
        .await
        .map_err(crate::analytics::AnalyticsError::from)?;
    let (_, batches) = crate::analytics::collect(&ctx, "SELECT * FROM hotspots").await?;
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer
            .write(batch)
            .map_err(crate::analytics::AnalyticsError::from)?;
    }
    writer
        .finish()
        .map_err(crate::analytics::AnalyticsError::from)?;
    let bytes = writer.into_inner();
    let rows: Vec<serde_json::Value> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            crate::analytics::AnalyticsError::from(arrow::error::ArrowError::JsonError(
                e.to_string(),
            ))
        })?
    };
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let id = row.get("hotspot_id")?.as_str()?.to_owned();
            Some((id, row))
        })
        .collect())
}
