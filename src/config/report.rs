//! `[report]`: settings of `leadflow report` (docs/analytics.md). Only the report reads them;
//! the service ignores the section.

use std::str::FromStr;

use chrono_tz::Tz;
use serde::Deserialize;

use super::error::{invalid, parse_duration, ConfigError};

/// What `[report]` holds, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReport {
    horizon: Option<String>,
    timezone: Option<String>,
    engagement_bands: Option<Vec<f64>>,
    source_attribute: Option<String>,
}

/// Validated `[report]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSettings {
    /// How long after an MQL its outcome is counted (ms; default 90 days).
    pub horizon_ms: i64,
    /// The time zone that cuts cohorts into months (default UTC).
    pub timezone: Tz,
    /// Lower bounds of the engagement bands at MQL, ascending; the first band starts at the
    /// first bound and everything below it is its own band (default 0, 50, 100, 150, 200).
    pub engagement_bands: Vec<f64>,
    /// The profile attribute that names a lead's source (default `lead_source`).
    pub source_attribute: String,
}

pub const DEFAULT_HORIZON_MS: i64 = 90 * 86_400_000;

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            horizon_ms: DEFAULT_HORIZON_MS,
            timezone: Tz::UTC,
            engagement_bands: vec![0.0, 50.0, 100.0, 150.0, 200.0],
            source_attribute: "lead_source".to_string(),
        }
    }
}

pub(crate) fn validate(raw: RawReport) -> Result<ReportSettings, ConfigError> {
    let mut s = ReportSettings::default();
    if let Some(h) = &raw.horizon {
        s.horizon_ms = positive_horizon("report.horizon", h)?;
    }
    if let Some(tz) = &raw.timezone {
        s.timezone = Tz::from_str(tz).map_err(|_| {
            invalid(
                "report.timezone",
                tz,
                "an IANA time zone name such as America/New_York, Europe/Berlin or UTC",
            )
        })?;
    }
    if let Some(bands) = raw.engagement_bands {
        if bands.is_empty() || bands.len() > 32 {
            return Err(invalid(
                "report.engagement_bands",
                &bands,
                "1 to 32 lower bounds, ascending",
            ));
        }
        for (i, w) in bands.windows(2).enumerate() {
            if w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less) {
                return Err(invalid(
                    format!("report.engagement_bands[{}]", i + 1),
                    w[1],
                    format!("bounds are ascending: must be above {}", w[0]),
                ));
            }
        }
        if let Some(b) = bands.iter().find(|b| !b.is_finite()) {
            return Err(invalid("report.engagement_bands", b, "finite numbers"));
        }
        s.engagement_bands = bands;
    }
    if let Some(a) = raw.source_attribute {
        if a.is_empty() {
            return Err(invalid(
                "report.source_attribute",
                &a,
                "a profile attribute name such as lead_source",
            ));
        }
        s.source_attribute = a;
    }
    Ok(s)
}

/// A horizon: a positive humantime duration (`90d`, `6w`...).
pub fn positive_horizon(key: &str, text: &str) -> Result<i64, ConfigError> {
    let ms = parse_duration(key, text)?;
    if ms <= 0 {
        return Err(invalid(key, text, "a duration greater than 0, such as 90d"));
    }
    Ok(ms)
}
