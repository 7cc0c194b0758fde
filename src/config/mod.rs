//! Typed settings: TOML file, then `LEADFLOW__SECTION__KEY` environment overrides. Unknown
//! keys are rejected; every invalid value fails with the key path, the value and what is
//! allowed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::model::calendar::{parse_hours, Calendar, WEEKDAYS};
use crate::model::event::{CrmType, Source};
use crate::model::funnel::Stage;
use crate::model::matcher::Matcher;
use crate::model::rules::{
    EngagementRule, EventPattern, FitRule, FitTest, Funnel, Grade, Limits, Ruleset, SlaPolicy,
    Until, MAX_GRADES,
};
use crate::model::score::Decay;

pub(crate) mod error;
pub mod notify;
pub mod report;
mod service;

pub use error::ConfigError;
pub(crate) use error::{invalid, parse_duration, positive_duration};
pub use service::{
    producer_max_bytes, InputFormat, KeyMismatch, OutputFormat, Service, Topics, Transactions,
};

/// Environment variables with this prefix (then `__`) override file settings.
pub const ENV_PREFIX: &str = "LEADFLOW";

// ---- raw shape (what serde reads) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    scoring: RawScoring,
    funnel: RawFunnel,
    #[serde(default)]
    sla: Vec<RawSla>,
    #[serde(default)]
    calendars: BTreeMap<String, RawCalendar>,
    #[serde(default)]
    clock: RawClock,
    #[serde(default)]
    dedupe: RawDedupe,
    #[serde(default)]
    input: RawInput,
    #[serde(default)]
    kafka: service::RawKafka,
    #[serde(default)]
    topics: service::RawTopics,
    #[serde(default)]
    formats: service::RawFormats,
    #[serde(default)]
    snapshots: service::RawSnapshots,
    #[serde(default)]
    run: service::RawRun,
    #[serde(default)]
    http: service::RawHttp,
    #[serde(default)]
    log: service::RawLog,
    #[serde(default)]
    schema_registry: service::RawRegistry,
    #[serde(default)]
    ingest: service::RawIngest,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    notify: notify::RawNotify,
    #[serde(default)]
    report: report::RawReport,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default, deserialize_with = "whole_number")]
    max_message_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    max_attributes: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    max_attribute_bytes: Option<u64>,
    #[serde(default, deserialize_with = "whole_number")]
    max_leads_per_partition: Option<u64>,
    evict_inactive_after: Option<String>,
    evict_terminal_after: Option<String>,
    #[serde(default, deserialize_with = "whole_number")]
    max_pending_timers_per_partition: Option<u64>,
    max_future: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInput {
    lead_key: Option<String>,
}

/// `[limits]`: every key optional; integers checked against a floor that keeps the service
/// usable.
fn build_limits(raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let at_least = |key: &str, v: Option<u64>, min: u64| -> Result<Option<u64>, ConfigError> {
        match v {
            Some(n) if n < min => Err(invalid(
                format!("limits.{key}"),
                n,
                format!("an integer >= {min}"),
            )),
            other => Ok(other),
        }
    };
    let duration = |key: &str, v: &Option<String>| -> Result<Option<i64>, ConfigError> {
        v.as_deref()
            .map(|t| positive_duration(&format!("limits.{key}"), t))
            .transpose()
    };
    let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(Limits {
        max_message_bytes: at_least("max_message_bytes", raw.max_message_bytes, 1024)?
            .map_or(d.max_message_bytes, size),
        max_attributes: at_least("max_attributes", raw.max_attributes, 1)?
            .map_or(d.max_attributes, size),
        max_attribute_bytes: at_least("max_attribute_bytes", raw.max_attribute_bytes, 16)?
            .map_or(d.max_attribute_bytes, size),
        max_leads: at_least("max_leads_per_partition", raw.max_leads_per_partition, 100)?,
        evict_inactive_after_ms: duration("evict_inactive_after", &raw.evict_inactive_after)?,
        evict_terminal_after_ms: duration("evict_terminal_after", &raw.evict_terminal_after)?,
        max_pending_timers: at_least(
            "max_pending_timers_per_partition",
            raw.max_pending_timers_per_partition,
            2,
        )?
        .unwrap_or(d.max_pending_timers),
        max_future_ms: match &raw.max_future {
            Some(t) => parse_duration("limits.max_future", t)?,
            None => d.max_future_ms,
        },
        lead_key: d.lead_key,
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScoring {
    half_life: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    grades: Vec<RawGrade>,
    #[serde(default)]
    engagement: Vec<RawRule>,
    #[serde(default)]
    fit: Vec<RawFit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrade {
    grade: String,
    min: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(rename = "where", default)]
    conditions: BTreeMap<String, String>,
    points: f64,
    cooldown: Option<String>,
    cooldown_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFit {
    name: String,
    attribute: String,
    #[serde(rename = "match")]
    matcher: Option<String>,
    gte: Option<f64>,
    lt: Option<f64>,
    points: f64,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunnel {
    mql_threshold: f64,
    #[serde(default)]
    mql_min_fit: f64,
    #[serde(default = "yes")]
    recycle_reset: bool,
    #[serde(default)]
    fast_track: Vec<RawPattern>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    source: String,
    #[serde(rename = "type")]
    event_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSla {
    name: String,
    stage: String,
    within: String,
    warn_before: Option<String>,
    calendar: Option<String>,
    until: RawUntil,
}

enum RawUntil {
    Keyword(String),
    Events(Vec<RawPattern>),
}

impl<'de> Deserialize<'de> for RawUntil {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUntil;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"stage_exit\" or a list of { source, type }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUntil, E> {
                Ok(RawUntil::Keyword(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawUntil, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<RawPattern>()? {
                    out.push(p);
                }
                Ok(RawUntil::Events(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    timezone: String,
    #[serde(default)]
    hours: BTreeMap<String, String>,
    #[serde(default)]
    holidays: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClock {
    grace: Option<String>,
    allowed_lateness: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDedupe {
    #[serde(default, deserialize_with = "whole_number")]
    recent_ids: Option<u64>,
}

/// A whole number, refusing what serde would otherwise round or parse (`1.5`, `"8"`), so the
/// error quotes the value as written.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(E::invalid_type(de::Unexpected::Str(v), &self))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(E::invalid_type(de::Unexpected::Bool(v), &self))
        }
    }
    d.deserialize_any(V)
}

// ---- validated settings ----

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Arc<Ruleset>,
    pub calendars: Vec<Arc<Calendar>>,
    /// Ticks are appended at `now - grace` (Kafka mode).
    pub clock_grace_ms: i64,
    /// Kafka service settings (defaults when absent).
    pub service: Service,
    /// Notifications (`[notify]`; off without routes).
    pub notify: notify::NotifyConfig,
    /// `leadflow report` settings (`[report]`).
    pub report: report::ReportSettings,
    /// A short hash of the `[scoring]` and `[funnel]` sections as loaded (overrides
    /// included): which lead definition a report measured (docs/analytics.md).
    pub definition: String,
}

impl Settings {
    /// Loads a TOML file with environment overrides from the process environment.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Source(format!("cannot read {}: {e}", path.display())))?;
        Self::from_sources(&text, None)
    }

    /// Parses TOML text; `env` replaces the process environment when given (tests).
    pub fn from_sources(
        toml: &str,
        env: Option<HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        Self::with_overrides(toml, env, &[])
    }

    /// Like [`Self::from_sources`], then `overrides` (`(key path, number)`, e.g.
    /// `("funnel.mql_threshold", 80.0)`) set on top: a `leadflow report --sweep` definition.
    /// A key that names nothing numeric fails as that key.
    pub fn with_overrides(
        toml: &str,
        env: Option<HashMap<String, String>>,
        overrides: &[(String, f64)],
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(env),
            );
        for (key, value) in overrides {
            // A whole number stays an integer: some keys (counts) take only integers.
            let v: config::Value = if value.fract() == 0.0 && value.abs() < 9e15 {
                (*value as i64).into()
            } else {
                (*value).into()
            };
            builder = builder
                .set_override(key.as_str(), v)
                .map_err(|e| ConfigError::Source(format!("{key}: {e}")))?;
        }
        let cfg = builder
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        let definition = definition_hash(&cfg);
        let raw: RawConfig = serde_path_to_error::deserialize(cfg).map_err(|e| {
            let key = match e.path().to_string() {
                root if root == "." => "the top level".to_string(),
                path => path,
            };
            ConfigError::Shape {
                key,
                message: dot_after_index(&e.into_inner().to_string()),
            }
        })?;
        let mut settings = validate(raw)?;
        settings.definition = definition;
        Ok(settings)
    }

    /// Parses TOML text without environment overrides.
    pub fn from_toml(toml: &str) -> Result<Settings, ConfigError> {
        Self::from_sources(toml, Some(HashMap::new()))
    }

    /// A few lines for `check-config`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let r = &self.rules;
        let mut s = String::new();
        let hl = r
            .decay
            .half_life_ms
            .map_or("none".to_string(), |h| fmt_ms(h as i64));
        let _ = writeln!(
            s,
            "scoring: {} engagement rules, {} fit rules, {} grades, half-life {hl}",
            r.engagement.len(),
            r.fit.len(),
            r.grades.len()
        );
        let _ = writeln!(
            s,
            "funnel: mql_threshold {}, mql_min_fit {}, recycle_reset {}, {} fast tracks",
            r.funnel.mql_threshold,
            r.funnel.mql_min_fit,
            r.funnel.recycle_reset,
            r.funnel.fast_track.len()
        );
        let _ = writeln!(s, "sla policies: {}", r.sla.len());
        for p in &r.sla {
            let until = match &p.until {
                Until::StageExit => "stage_exit".to_string(),
                Until::Events(ev) => ev
                    .iter()
                    .map(|e| format!("{}/{}", e.source, e.event_type))
                    .collect::<Vec<_>>()
                    .join(" | "),
            };
            let _ = writeln!(
                s,
                "  {}: stage {}, within {}{}{}, until {until}",
                p.name,
                p.stage,
                fmt_ms(p.within_ms),
                p.warn_before_ms
                    .map_or(String::new(), |w| format!(", warn {} before", fmt_ms(w))),
                p.calendar
                    .as_ref()
                    .map_or(String::new(), |c| format!(", calendar {}", c.name)),
            );
        }
        let _ = writeln!(s, "calendars: {}", self.calendars.len());
        for c in &self.calendars {
            let open_days = c.week().iter().filter(|d| !d.is_empty()).count();
            let _ = writeln!(
                s,
                "  {}: {}, open {open_days} days a week, {} holidays",
                c.name,
                c.tz().name(),
                c.holidays.len()
            );
        }
        let _ = writeln!(
            s,
            "clock: grace {}, allowed lateness {}",
            fmt_ms(self.clock_grace_ms),
            fmt_ms(r.allowed_lateness_ms)
        );
        let _ = writeln!(
            s,
            "input: lead keys {}, duplicates among the last {} ids, future limit {}",
            match r.limits.lead_key {
                crate::model::event::LeadKeyMode::Exact => "exact",
                crate::model::event::LeadKeyMode::Lowercase => "lowercase",
            },
            r.dedupe_ids,
            if r.limits.max_future_ms > 0 {
                fmt_ms(r.limits.max_future_ms)
            } else {
                "off".to_string()
            }
        );
        let store = &self.service.snapshot_store;
        let _ = writeln!(
            s,
            "snapshots: {}{}, every {}, {} kept per partition",
            store.url,
            store
                .endpoint
                .as_ref()
                .map_or(String::new(), |e| format!(" (endpoint {e})")),
            fmt_ms(self.service.snapshot_interval_ms),
            store.retain
        );
        let n = &self.notify;
        if n.routes.is_empty() {
            let _ = writeln!(s, "notify: no routes");
        } else {
            let targets: Vec<String> = n
                .targets
                .iter()
                .map(|t| format!("{} ({})", t.name, format!("{:?}", t.kind).to_lowercase()))
                .collect();
            let _ = writeln!(
                s,
                "notify: {}, {} routes, targets {}, {} owners, dead letters to {}",
                if n.enabled {
                    "on in run"
                } else {
                    "off in run (leadflow notify)"
                },
                n.routes.len(),
                targets.join(", "),
                n.owners.len(),
                n.dlq
            );
        }
        s
    }
}

/// The first 10 hex digits of SHA-256 over the `[scoring]` and `[funnel]` sections in a
/// canonical form (keys sorted, every number as f64), so `100` and `100.0`, or a reordered
/// table, name the same definition.
fn definition_hash(cfg: &config::Config) -> String {
    use sha2::Digest;
    fn canon(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canon(&m[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for x in a {
                    canon(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            serde_json::Value::Number(n) => {
                out.push_str(&format!("{:?}", n.as_f64().unwrap_or(f64::NAN)));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    for section in ["scoring", "funnel"] {
        let v = cfg
            .get::<serde_json::Value>(section)
            .unwrap_or(serde_json::Value::Null);
        text.push_str(section);
        text.push('=');
        canon(&v, &mut text);
        text.push('\n');
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    hex::encode(&digest[..5])
}

fn fmt_ms(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn parse_source(key: &str, text: &str) -> Result<Source, ConfigError> {
    Source::parse(text).ok_or_else(|| invalid(key, text, "allowed: web, email, crm"))
}

fn crm_types() -> String {
    CrmType::ALL.map(CrmType::as_str).join(", ")
}

/// A type for `source`; `*` only where `wildcard` is allowed. crm types must be known.
fn parse_type(
    key: &str,
    source: Source,
    text: &str,
    wildcard: bool,
) -> Result<Option<String>, ConfigError> {
    if text == "*" && wildcard {
        return Ok(None);
    }
    if text.is_empty() || text == "*" {
        return Err(invalid(key, text, "expected an event type name"));
    }
    if source == Source::Crm && CrmType::parse(text).is_none() {
        return Err(invalid(
            key,
            text,
            format!("crm types are: {}", crm_types()),
        ));
    }
    Ok(Some(text.to_string()))
}

fn parse_pattern(key: &str, p: &RawPattern) -> Result<EventPattern, ConfigError> {
    let source = parse_source(&format!("{key}.source"), &p.source)?;
    let event_type =
        parse_type(&format!("{key}.type"), source, &p.event_type, false)?.unwrap_or_default();
    Ok(EventPattern { source, event_type })
}

fn finite(key: &str, x: f64) -> Result<f64, ConfigError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(invalid(key, x, "expected a finite number"))
    }
}

fn unique_name(
    key: &str,
    name: &str,
    seen: &mut HashSet<String>,
    what: &str,
) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(
            key,
            name,
            format!("a {what} name must not be empty"),
        ));
    }
    if !seen.insert(name.to_string()) {
        return Err(invalid(key, name, format!("{what} names must be unique")));
    }
    Ok(())
}

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let s = raw.scoring;
    let half_life_ms = s
        .half_life
        .as_deref()
        .map(|h| positive_duration("scoring.half_life", h))
        .transpose()?
        .map(|ms| ms as f64);
    if let Some(min) = s.min {
        finite("scoring.min", min)?;
    }
    if let Some(max) = s.max {
        finite("scoring.max", max)?;
    }
    if let (Some(min), Some(max)) = (s.min, s.max) {
        if min > max {
            return Err(invalid(
                "scoring.min",
                min,
                format!("must not exceed scoring.max ({max})"),
            ));
        }
    }
    let decay = Decay {
        half_life_ms,
        min: s.min,
        max: s.max,
    };

    if s.grades.len() > MAX_GRADES {
        return Err(invalid(
            "scoring.grades",
            s.grades.len(),
            format!("at most {MAX_GRADES} grades"),
        ));
    }
    let mut grades = Vec::new();
    let mut seen = HashSet::new();
    for (i, g) in s.grades.iter().enumerate() {
        let key = format!("scoring.grades[{i}]");
        unique_name(&format!("{key}.grade"), &g.grade, &mut seen, "grade")?;
        let min = finite(&format!("{key}.min"), g.min)?;
        if let Some(prev) = grades.last().map(|p: &Grade| p.min) {
            if min >= prev {
                return Err(invalid(
                    format!("{key}.min"),
                    min,
                    format!("grades are listed highest first: must be below {prev}"),
                ));
            }
        }
        grades.push(Grade {
            grade: g.grade.clone(),
            min,
        });
    }

    let mut engagement = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in s.engagement.iter().enumerate() {
        let key = format!("scoring.engagement[{i}]");
        unique_name(
            &format!("{key}.name"),
            &r.name,
            &mut seen,
            "engagement rule",
        )?;
        let source = parse_source(&format!("{key}.source"), &r.source)?;
        let event_type = parse_type(&format!("{key}.type"), source, &r.event_type, true)?;
        let mut conditions = Vec::new();
        for (attr, m) in &r.conditions {
            let m = Matcher::parse(m).map_err(|e| invalid(format!("{key}.where.{attr}"), m, e))?;
            conditions.push((attr.clone(), m));
        }
        let points = finite(&format!("{key}.points"), r.points)?;
        let cooldown_ms = r
            .cooldown
            .as_deref()
            .map(|c| positive_duration(&format!("{key}.cooldown"), c))
            .transpose()?;
        let cooldown_key = match (&r.cooldown_key, cooldown_ms) {
            (None, _) => None,
            (Some(k), _) if k.trim().is_empty() => {
                return Err(invalid(
                    format!("{key}.cooldown_key"),
                    k,
                    "an attribute name such as \"asset\"",
                ))
            }
            (Some(k), None) => {
                return Err(invalid(
                    format!("{key}.cooldown_key"),
                    k,
                    format!(
                        "only with a cooldown: rule {:?} has none (add e.g. cooldown = \"30d\")",
                        r.name
                    ),
                ))
            }
            (Some(k), Some(_)) => Some(k.clone()),
        };
        engagement.push(EngagementRule {
            name: r.name.clone(),
            source,
            event_type,
            conditions,
            points,
            cooldown_ms,
            cooldown_key,
        });
    }
    if engagement.len() > u16::MAX as usize {
        return Err(invalid(
            "scoring.engagement",
            engagement.len(),
            "at most 65535 rules",
        ));
    }

    let mut fit = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in s.fit.iter().enumerate() {
        let key = format!("scoring.fit[{i}]");
        unique_name(&format!("{key}.name"), &r.name, &mut seen, "fit rule")?;
        if r.attribute.is_empty() {
            return Err(invalid(
                format!("{key}.attribute"),
                &r.attribute,
                "an attribute name",
            ));
        }
        let test = match (&r.matcher, r.gte, r.lt) {
            (Some(m), None, None) => FitTest::Match(
                Matcher::parse(m).map_err(|e| invalid(format!("{key}.match"), m, e))?,
            ),
            (None, gte, lt) if gte.is_some() || lt.is_some() => {
                if let Some(g) = gte {
                    finite(&format!("{key}.gte"), g)?;
                }
                if let Some(l) = lt {
                    finite(&format!("{key}.lt"), l)?;
                }
                if let (Some(g), Some(l)) = (gte, lt) {
                    if g >= l {
                        return Err(invalid(
                            format!("{key}.lt"),
                            l,
                            format!("must be above gte ({g})"),
                        ));
                    }
                }
                FitTest::Range { gte, lt }
            }
            (Some(m), _, _) => {
                return Err(invalid(
                    format!("{key}.match"),
                    m,
                    "a fit rule has either `match` or numeric bounds `gte`/`lt`, not both",
                ))
            }
            (None, _, _) => {
                return Err(ConfigError::Shape {
                    key,
                    message: "a fit rule needs `match` or at least one of `gte`, `lt`".into(),
                })
            }
        };
        let points = finite(&format!("{key}.points"), r.points)?;
        fit.push(FitRule {
            name: r.name.clone(),
            attribute: r.attribute.clone(),
            test,
            points,
        });
    }

    let f = raw.funnel;
    let mut fast_track = Vec::new();
    for (i, p) in f.fast_track.iter().enumerate() {
        fast_track.push(parse_pattern(&format!("funnel.fast_track[{i}]"), p)?);
    }
    let funnel = Funnel {
        mql_threshold: finite("funnel.mql_threshold", f.mql_threshold)?,
        mql_min_fit: finite("funnel.mql_min_fit", f.mql_min_fit)?,
        recycle_reset: f.recycle_reset,
        fast_track,
    };

    let mut calendars: BTreeMap<String, Arc<Calendar>> = BTreeMap::new();
    for (name, c) in &raw.calendars {
        calendars.insert(name.clone(), Arc::new(build_calendar(name, c)?));
    }

    let mut sla = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in raw.sla.iter().enumerate() {
        let key = format!("sla[{i}]");
        unique_name(&format!("{key}.name"), &p.name, &mut seen, "sla policy")?;
        if p.name.contains('/') {
            // The name is part of `sla_event_id`, which uses `/` as its separator.
            return Err(invalid(
                format!("{key}.name"),
                &p.name,
                "must not contain `/`",
            ));
        }
        let stage = Stage::parse(&p.stage).ok_or_else(|| {
            invalid(
                format!("{key}.stage"),
                &p.stage,
                format!("allowed: {}", Stage::ALL.map(Stage::as_str).join(", ")),
            )
        })?;
        let within_ms = positive_duration(&format!("{key}.within"), &p.within)?;
        let warn_before_ms = match &p.warn_before {
            Some(w) => {
                let ms = parse_duration(&format!("{key}.warn_before"), w)?;
                if ms >= within_ms {
                    return Err(invalid(
                        format!("{key}.warn_before"),
                        w,
                        format!("must be shorter than within ({})", p.within),
                    ));
                }
                Some(ms)
            }
            None => None,
        };
        let calendar = match &p.calendar {
            Some(name) => Some(calendars.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = calendars.keys().map(String::as_str).collect();
                invalid(
                    format!("{key}.calendar"),
                    name,
                    if known.is_empty() {
                        "no calendars are defined ([calendars.NAME])".to_string()
                    } else {
                        format!("defined calendars: {}", known.join(", "))
                    },
                )
            })?),
            None => None,
        };
        let until = match &p.until {
            RawUntil::Keyword(k) if k == "stage_exit" => Until::StageExit,
            RawUntil::Keyword(k) => {
                return Err(invalid(
                    format!("{key}.until"),
                    k,
                    "\"stage_exit\" or a list of { source, type }",
                ))
            }
            RawUntil::Events(list) if list.is_empty() => {
                return Err(invalid(
                    format!("{key}.until"),
                    "[]",
                    "a list with at least one { source, type }, or \"stage_exit\"",
                ))
            }
            RawUntil::Events(list) => Until::Events(
                list.iter()
                    .enumerate()
                    .map(|(j, e)| parse_pattern(&format!("{key}.until[{j}]"), e))
                    .collect::<Result<_, _>>()?,
            ),
        };
        sla.push(SlaPolicy {
            name: p.name.clone(),
            stage,
            within_ms,
            warn_before_ms,
            calendar,
            until,
        });
    }
    if sla.len() > u16::MAX as usize {
        return Err(invalid("sla", sla.len(), "at most 65535 policies"));
    }

    let clock_grace_ms = match &raw.clock.grace {
        Some(g) => parse_duration("clock.grace", g)?,
        None => 30_000,
    };

    let service = service::validate(service::RawSections {
        kafka: raw.kafka,
        topics: raw.topics,
        formats: raw.formats,
        snapshots: raw.snapshots,
        run: raw.run,
        http: raw.http,
        log: raw.log,
        registry: raw.schema_registry,
        ingest: raw.ingest,
    })?;
    let mut rules = Ruleset::new(engagement, decay, fit, grades, funnel, sla);
    rules.limits = build_limits(&raw.limits)?;
    rules.limits.lead_key = match raw.input.lead_key.as_deref().unwrap_or("exact") {
        "exact" => crate::model::event::LeadKeyMode::Exact,
        "lowercase" => crate::model::event::LeadKeyMode::Lowercase,
        other => {
            return Err(invalid(
                "input.lead_key",
                other,
                "allowed: exact, lowercase",
            ))
        }
    };
    rules.allowed_lateness_ms = match &raw.clock.allowed_lateness {
        Some(l) => parse_duration("clock.allowed_lateness", l)?,
        None => 0,
    };
    rules.dedupe_ids = match raw.dedupe.recent_ids {
        None => crate::model::rules::DEFAULT_DEDUPE_IDS,
        Some(n) if (1..=crate::model::rules::MAX_DEDUPE_IDS as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(invalid(
                "dedupe.recent_ids",
                n,
                format!("from 1 to {}", crate::model::rules::MAX_DEDUPE_IDS),
            ))
        }
    };
    service::check_together(&service, &rules.limits)?;
    let policies: Vec<String> = rules.sla.iter().map(|p| p.name.clone()).collect();
    let notify = notify::validate(raw.notify, &policies)?;
    let report = report::validate(raw.report)?;
    Ok(Settings {
        rules: Arc::new(rules),
        calendars: calendars.into_values().collect(),
        clock_grace_ms,
        service,
        notify,
        report,
        definition: String::new(),
    })
}

fn build_calendar(name: &str, c: &RawCalendar) -> Result<Calendar, ConfigError> {
    let key = format!("calendars.{name}");
    let tz = Tz::from_str(&c.timezone).map_err(|_| {
        invalid(
            format!("{key}.timezone"),
            &c.timezone,
            "an IANA time zone name such as America/New_York, Europe/Berlin or UTC",
        )
    })?;
    let mut week: [Vec<_>; 7] = Default::default();
    for (day, hours) in &c.hours {
        let idx = WEEKDAYS.iter().position(|d| d == day).ok_or_else(|| {
            invalid(
                format!("{key}.hours"),
                day,
                format!("weekday keys are: {}", WEEKDAYS.join(", ")),
            )
        })?;
        week[idx] = parse_hours(hours).map_err(|e| {
            invalid(
                format!("{key}.hours.{day}"),
                hours,
                format!("expected \"HH:MM-HH:MM\" (several separated by commas): {e}"),
            )
        })?;
    }
    let mut holidays = std::collections::BTreeSet::new();
    for (i, h) in c.holidays.iter().enumerate() {
        let d = NaiveDate::parse_from_str(h, "%Y-%m-%d")
            .map_err(|_| invalid(format!("{key}.holidays[{i}]"), h, "a local date YYYY-MM-DD"))?;
        holidays.insert(d);
    }
    let cal = Calendar::new(name.to_string(), tz, week, holidays);
    if !cal.has_open_time() {
        return Err(invalid(
            format!("{key}.hours"),
            &c.hours,
            "a calendar needs opening hours on at least one weekday",
        ));
    }
    Ok(cal)
}

/// The `config` crate names a missing field of a list entry as `sla[0]within`: puts the dot
/// back (`sla[0].within`), as the error's own key and the docs write paths.
fn dot_after_index(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 4);
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']'
            && chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_')
        {
            out.push('.');
        }
    }
    out
}
