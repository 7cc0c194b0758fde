//! `[notify]`: targets (Slack incoming webhooks, JSON webhooks), routes from output records to
//! targets, per-owner routing. Secrets (webhook URLs, HMAC keys) are read from environment
//! variables or files named here, never written in the config, and never printed.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::Deserialize;

use super::error::{invalid, parse_duration, ConfigError};
use crate::model::funnel::Stage;
use crate::model::records::SlaKind;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    enabled: Option<bool>,
    group: Option<String>,
    dlq: Option<String>,
    start: Option<String>,
    give_up_after: Option<String>,
    timezone: Option<String>,
    lead_link: Option<String>,
    queue_limit: Option<u64>,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    owners: BTreeMap<String, String>,
    #[serde(default)]
    owner_timezones: BTreeMap<String, String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: String,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    rate: Option<f64>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    record: String,
    to_stage: Option<Vec<String>>,
    sla_kind: Option<Vec<String>>,
    policy: Option<Vec<String>>,
    target: String,
    fallback: Option<String>,
}

/// A secret value (a webhook URL, an HMAC key): `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A Slack incoming webhook: a readable message (`{"text": …}`).
    Slack,
    /// Any HTTP endpoint: the record as JSON, an idempotency key and, with a secret, an
    /// HMAC-SHA256 signature.
    Webhook,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub url: Secret,
    pub secret: Option<Secret>,
    /// Messages per second at most (0: no limit). Slack allows about one per second per
    /// webhook, the default for `slack`.
    pub rate: f64,
    pub timeout_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Transition,
    Sla,
}

/// Where a route sends its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTo {
    Target(usize),
    /// The target of the record's owner in `notify.owners`, else the fallback (else nothing).
    Owner {
        fallback: Option<usize>,
    },
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub record: RecordKind,
    pub to_stage: Option<Vec<Stage>>,
    pub sla_kind: Option<Vec<SlaKind>>,
    pub policy: Option<Vec<String>>,
    pub to: RouteTo,
}

/// Where a new consumer group starts on the output topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Only records written from now on (a new deployment does not replay old alerts).
    Latest,
    Earliest,
}

#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// The notify stage runs inside `leadflow run` (default: when routes are configured).
    pub enabled: bool,
    pub group: String,
    pub dlq: String,
    pub start: Start,
    /// A delivery that keeps failing (timeouts, 5xx, 429) goes to the DLQ after this long.
    pub give_up_after_ms: i64,
    /// For deadlines in messages, when the owner has no timezone of their own.
    pub timezone: Tz,
    /// `{lead_key}` is replaced (URL-encoded).
    pub lead_link: Option<String>,
    /// Messages waiting for one target before consumption pauses.
    pub queue_limit: usize,
    pub targets: Vec<Target>,
    pub owners: BTreeMap<String, usize>,
    pub owner_timezones: BTreeMap<String, Tz>,
    pub routes: Vec<Route>,
}

impl NotifyConfig {
    pub fn target_index(&self, name: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.name == name)
    }
}

/// Reads a secret from `NAME_env` or `NAME_file` (exactly one).
fn secret(
    key: &str,
    env: &Option<String>,
    file: &Option<String>,
    required: bool,
) -> Result<Option<Secret>, ConfigError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(invalid(
            format!("{key}_env"),
            "both set",
            format!("set {key}_env or {key}_file, not both"),
        )),
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret(v.trim().to_string()))),
            _ => Err(invalid(
                format!("{key}_env"),
                var,
                "the environment variable it names is not set (or empty)",
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(Secret(v.trim().to_string()))),
            Ok(_) => Err(invalid(format!("{key}_file"), path, "the file is empty")),
            Err(e) => Err(invalid(
                format!("{key}_file"),
                path,
                format!("cannot read it: {e}"),
            )),
        },
        (None, None) if required => Err(invalid(
            format!("{key}_env"),
            "missing",
            format!("set {key}_env (an environment variable) or {key}_file (a file) holding it"),
        )),
        (None, None) => Ok(None),
    }
}

fn list<T>(
    key: &str,
    values: &Option<Vec<String>>,
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Option<Vec<T>>, ConfigError> {
    let Some(values) = values else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(parse(v).ok_or_else(|| invalid(key, v, allowed))?);
    }
    Ok(Some(out))
}

fn tz(key: &str, name: &str) -> Result<Tz, ConfigError> {
    name.parse::<Tz>().map_err(|_| {
        invalid(
            key,
            name,
            "an IANA timezone such as America/New_York or UTC",
        )
    })
}

/// Validates `[notify]` against the SLA policy names of the config.
pub(crate) fn validate(raw: RawNotify, policies: &[String]) -> Result<NotifyConfig, ConfigError> {
    let mut targets = Vec::new();
    for (name, t) in &raw.targets {
        let key = format!("notify.targets.{name}");
        let kind = match t.kind.as_str() {
            "slack" => TargetKind::Slack,
            "webhook" => TargetKind::Webhook,
            other => {
                return Err(invalid(
                    format!("{key}.kind"),
                    other,
                    "allowed: slack, webhook",
                ))
            }
        };
        if t.url.is_some() {
            return Err(invalid(
                format!("{key}.url"),
                "<not shown>",
                "a webhook URL is a secret: put it in an environment variable (url_env) or a \
                 file (url_file)",
            ));
        }
        let url = secret(&format!("{key}.url"), &t.url_env, &t.url_file, true)?
            .ok_or_else(|| invalid(format!("{key}.url_env"), "missing", "required"))?;
        if !(url.0.starts_with("http://") || url.0.starts_with("https://"))
            || url.0.contains(char::is_whitespace)
        {
            let which = if t.url_file.is_some() {
                "url_file"
            } else {
                "url_env"
            };
            return Err(invalid(
                format!("{key}.{which}"),
                "<not shown>",
                "what it holds must be an http:// or https:// URL without spaces",
            ));
        }
        let secret = secret(
            &format!("{key}.secret"),
            &t.secret_env,
            &t.secret_file,
            false,
        )?;
        if secret.is_some() && kind == TargetKind::Slack {
            return Err(invalid(
                format!("{key}.secret_env"),
                "set",
                "Slack webhooks are not signed by the sender; a secret is for kind = \"webhook\"",
            ));
        }
        let rate = t
            .rate
            .unwrap_or(if kind == TargetKind::Slack { 1.0 } else { 0.0 });
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(invalid(
                format!("{key}.rate"),
                rate,
                "messages per second, 0 for no limit",
            ));
        }
        let timeout_ms = match &t.timeout {
            Some(d) => parse_duration(&format!("{key}.timeout"), d)?,
            None => 10_000,
        };
        if timeout_ms <= 0 {
            return Err(invalid(
                format!("{key}.timeout"),
                t.timeout.as_deref().unwrap_or(""),
                "greater than 0",
            ));
        }
        targets.push(Target {
            name: name.clone(),
            kind,
            url,
            secret,
            rate,
            timeout_ms,
        });
    }
    let index = |key: &str, name: &str| -> Result<usize, ConfigError> {
        targets.iter().position(|t| t.name == name).ok_or_else(|| {
            invalid(
                key,
                name,
                format!(
                    "a target defined under [notify.targets] ({})",
                    targets
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    };
    let mut owners = BTreeMap::new();
    for (owner, target) in &raw.owners {
        owners.insert(
            owner.clone(),
            index(&format!("notify.owners.{owner}"), target)?,
        );
    }
    let mut owner_timezones = BTreeMap::new();
    for (owner, name) in &raw.owner_timezones {
        owner_timezones.insert(
            owner.clone(),
            tz(&format!("notify.owner_timezones.{owner}"), name)?,
        );
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let key = format!("notify.routes[{i}]");
        let record = match r.record.as_str() {
            "transition" => RecordKind::Transition,
            "sla" => RecordKind::Sla,
            other => {
                return Err(invalid(
                    format!("{key}.record"),
                    other,
                    "allowed: transition, sla",
                ))
            }
        };
        let to_stage = list(
            &format!("{key}.to_stage"),
            &r.to_stage,
            |s| Stage::ALL.iter().copied().find(|st| st.as_str() == s),
            "a funnel stage: new, mql, sal, sql, won, lost, recycled, disqualified",
        )?;
        let sla_kind = list(
            &format!("{key}.sla_kind"),
            &r.sla_kind,
            |s| {
                [SlaKind::Warning, SlaKind::Breach, SlaKind::Met]
                    .into_iter()
                    .find(|k| k.as_str() == s)
            },
            "allowed: warning, breach, met",
        )?;
        let policy = list(
            &format!("{key}.policy"),
            &r.policy,
            |s| policies.iter().any(|p| p == s).then(|| s.to_string()),
            &format!("an SLA policy of this config ({})", policies.join(", ")),
        )?;
        match record {
            RecordKind::Transition if sla_kind.is_some() || policy.is_some() => {
                let which = if sla_kind.is_some() {
                    "sla_kind"
                } else {
                    "policy"
                };
                return Err(invalid(
                    format!("{key}.{which}"),
                    "set on a transition route",
                    "sla_kind and policy match SLA records: set record = \"sla\"",
                ));
            }
            RecordKind::Sla if to_stage.is_some() => {
                return Err(invalid(
                    format!("{key}.to_stage"),
                    "set on an SLA route",
                    "to_stage matches transitions: set record = \"transition\"",
                ));
            }
            _ => {}
        }
        let to = if r.target == "owner" {
            RouteTo::Owner {
                fallback: match &r.fallback {
                    Some(f) => Some(index(&format!("{key}.fallback"), f)?),
                    None => None,
                },
            }
        } else {
            if r.fallback.is_some() {
                return Err(invalid(
                    format!("{key}.fallback"),
                    r.fallback.as_deref().unwrap_or(""),
                    "a fallback goes with target = \"owner\"",
                ));
            }
            RouteTo::Target(index(&format!("{key}.target"), &r.target)?)
        };
        routes.push(Route {
            name: r.name.clone().unwrap_or_else(|| format!("route {i}")),
            record,
            to_stage,
            sla_kind,
            policy,
            to,
        });
    }
    let give_up_after_ms = parse_duration(
        "notify.give_up_after",
        raw.give_up_after.as_deref().unwrap_or("1h"),
    )?;
    if give_up_after_ms <= 0 {
        return Err(invalid(
            "notify.give_up_after",
            raw.give_up_after.as_deref().unwrap_or(""),
            "greater than 0",
        ));
    }
    let start = match raw.start.as_deref().unwrap_or("latest") {
        "latest" => Start::Latest,
        "earliest" => Start::Earliest,
        other => return Err(invalid("notify.start", other, "allowed: latest, earliest")),
    };
    let queue_limit = raw.queue_limit.unwrap_or(100_000);
    if queue_limit == 0 {
        return Err(invalid("notify.queue_limit", 0, "at least 1"));
    }
    if let Some(link) = &raw.lead_link {
        if !(link.starts_with("http://") || link.starts_with("https://"))
            || !link.contains("{lead_key}")
        {
            return Err(invalid(
                "notify.lead_link",
                link,
                "an http(s) URL template with {lead_key}, e.g. https://crm.example.com/leads/{lead_key}",
            ));
        }
    }
    Ok(NotifyConfig {
        enabled: raw.enabled.unwrap_or(!routes.is_empty()),
        group: raw.group.unwrap_or_else(|| "leadflow-notify".into()),
        dlq: raw.dlq.unwrap_or_else(|| "leads.notify.dlq".into()),
        start,
        give_up_after_ms,
        timezone: tz("notify.timezone", raw.timezone.as_deref().unwrap_or("UTC"))?,
        lead_link: raw.lead_link,
        queue_limit: queue_limit as usize,
        targets,
        owners,
        owner_timezones,
        routes,
    })
}
