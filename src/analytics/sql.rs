//! The SQL of the derived tables, kept in `queries/` for the data team and compiled into the binary.
//!
//! Templates name their parameters `{{name}}`. Every value is produced by this crate from typed
//! values (dates it formatted, numbers, names from a fixed set), never from user text, and a template
//! with a parameter left unfilled is an error rather than a query.

/// `effective_evaluations`: one evaluation per case, exclusions removed (a view).
pub const EFFECTIVE_EVALUATIONS: &str = include_str!("../../queries/effective_evaluations.sql");
/// One period's ranking rows.
pub const RANKINGS: &str = include_str!("../../queries/rankings.sql");
/// Entities at the bottom K periods in a row.
pub const WARNINGS: &str = include_str!("../../queries/warnings.sql");
/// Bad-review concentrations over one window.
pub const HOTSPOTS: &str = include_str!("../../queries/hotspots.sql");
/// Suspected fake good reviews and malicious bad reviewers of one month.
pub const FRAUD_SIGNALS: &str = include_str!("../../queries/fraud_signals.sql");

/// Finished cases with no evaluation, for their default evaluations.
pub const UNEVALUATED_CASES: &str = include_str!("../../queries/unevaluated_cases.sql");
/// The effective evaluation rate per month, region and department.
pub const EVALUATION_RATES: &str = include_str!("../../queries/evaluation_rates.sql");

/// The closed loop's indicators with the effective evaluation rate.
pub const KPIS: &str = include_str!("../../queries/kpis.sql");
/// Every bad review with the time of each step of its closed loop.
pub const BAD_REVIEW_STEPS: &str = include_str!("../../queries/bad_review_steps.sql");

/// The public notice (通报) of one period.
pub const NOTICE: &str = include_str!("../../queries/notice.sql");

/// Every template, by file name (their text is part of the refresh state's definition hash).
pub const TEMPLATES: [(&str, &str); 6] = [
    ("effective_evaluations.sql", EFFECTIVE_EVALUATIONS),
    ("rankings.sql", RANKINGS),
    ("warnings.sql", WARNINGS),
    ("hotspots.sql", HOTSPOTS),
    ("fraud_signals.sql", FRAUD_SIGNALS),
    ("notice.sql", NOTICE),
];

/// A template parameter that was not given, or a given one the template does not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("SQL template parameter {{{{{0}}}}} has no value")]
    Unfilled(String),
    #[error("SQL template has no parameter {{{{{0}}}}}")]
    Unused(String),
}

/// Fills `{{name}}` placeholders.
pub fn render(template: &str, values: &[(&str, String)]) -> Result<String, TemplateError> {
    let mut text = template.to_owned();
    for (name, value) in values {
        let placeholder = format!("{{{{{name}}}}}");
        if !text.contains(&placeholder) {
            return Err(TemplateError::Unused((*name).to_owned()));
        }
        text = text.replace(&placeholder, value);
    }
    if let Some(start) = text.find("{{") {
        let rest = &text[start + 2..];
        let name = rest.split("}}").next().unwrap_or(rest);
        return Err(TemplateError::Unfilled(name.chars().take(40).collect()));
    }
    Ok(text)
}

/// A SQL string literal (single quotes doubled).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A timestamp literal for a UTC instant in microseconds, comparable with `assessed_at`.
pub fn timestamp(utc_us: i64) -> String {
    let text = chrono::DateTime::from_timestamp_micros(utc_us)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    format!("CAST({} AS TIMESTAMP)", literal(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_or_fail() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Result<&'a str, TemplateError>,
        );
        let cases: &[Case] = &[
            ("a {{x}} b {{x}}", &[("x", "1")], Ok("a 1 b 1")),
            ("{{x}}{{y}}", &[("x", "1"), ("y", "2")], Ok("12")),
            (
                "{{x}} {{y}}",
                &[("x", "1")],
                Err(TemplateError::Unfilled("y".into())),
            ),
            (
                "{{x}}",
                &[("z", "1")],
                Err(TemplateError::Unused("z".into())),
            ),
            ("no params", &[], Ok("no params")),
        ];
        for (template, values, expected) in cases {
            let values: Vec<(&str, String)> =
                values.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            let got = render(template, &values);
            match expected {
                Ok(text) => assert_eq!(got.as_deref(), Ok(*text), "{template}"),
                Err(e) => assert_eq!(got, Err(e.clone()), "{template}"),
            }
        }
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            timestamp(1_792_461_600_000_000),
            "CAST('2026-10-20T02:00:00.000000Z' AS TIMESTAMP)"
        );
    }

    #[test]
    fn every_template_names_only_known_parameters() {
        for (name, text) in TEMPLATES {
            assert!(!text.trim().is_empty(), "{name}");
            assert!(
                text.starts_with("--"),
                "{name} starts with a comment saying what it is"
            );
        }
    }
}
