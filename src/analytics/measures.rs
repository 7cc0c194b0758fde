//! The report's figures, computed from what the collectors kept (pure). Every measure is
//! defined in docs/analytics.md; the JSON field names here are the documented schema
//! (`leadflow.report/1`).

use std::collections::BTreeMap;

use chrono::TimeZone;
use serde::Serialize;

use super::collect::{Amount, Change, Collector, Facts, LeadTrack};
use crate::config::report::ReportSettings;
use crate::model::funnel::Stage;
use crate::model::rules::Ruleset;

pub const SCHEMA: &str = "leadflow.report/1";

/// The whole report: one entry per definition (the first is the base config), and the side by
/// side comparison when there are several.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub generated_by: String,
    pub history: HistoryInfo,
    pub settings: SettingsInfo,
    pub definitions: Vec<DefinitionReport>,
    pub comparison: Option<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryInfo {
    /// Where the events came from (a file path, or `kafka:TOPIC`).
    pub source: String,
    /// Valid events read (duplicates included).
    pub events: u64,
    /// Lines or records refused as invalid input (SPEC §2), and by reason code.
    pub invalid: u64,
    pub invalid_by_reason: BTreeMap<&'static str, u64>,
    /// The first 20 invalid lines: (line number, reason).
    pub invalid_lines: Vec<(u64, String)>,
    /// The largest event time (ms since the epoch): where the history ends.
    pub end_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsInfo {
    pub horizon_ms: i64,
    pub timezone: String,
    pub engagement_bands: Vec<f64>,
    pub source_attribute: String,
}

impl SettingsInfo {
    pub fn new(s: &ReportSettings) -> SettingsInfo {
        SettingsInfo {
            horizon_ms: s.horizon_ms,
            timezone: s.timezone.name().to_string(),
            engagement_bands: s.engagement_bands.clone(),
            source_attribute: s.source_attribute.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DefinitionReport {
    /// What the user called it: the config file, or `KEY=VALUE` for a sweep point.
    pub label: String,
    /// Short hash of `[scoring]` and `[funnel]` as loaded.
    pub definition: String,
    pub mql_threshold: f64,
    pub headline: Headline,
    pub funnel: Funnel,
    pub cohorts: Vec<Cohort>,
    pub velocity: Velocity,
    pub breakdowns: Breakdowns,
    pub sla: Sla,
    pub revenue: Revenue,
    pub quality: Quality,
}

/// A count per funnel stage, serialized as an object in stage order (new, mql, ... ).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageCounts(pub [u64; 8]);

impl StageCounts {
    /// The count of a stage by name (`new`, `mql`, ...); 0 for another name.
    pub fn get(&self, stage: &str) -> u64 {
        Stage::ALL
            .iter()
            .position(|s| s.as_str() == stage)
            .map_or(0, |i| self.0[i])
    }
}

impl Serialize for StageCounts {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(8))?;
        for (st, n) in Stage::ALL.iter().zip(self.0) {
            m.serialize_entry(st.as_str(), &n)?;
        }
        m.end()
    }
}

/// The four measures at the top of the report (docs/analytics.md, "The four measures").
#[derive(Debug, Clone, Serialize)]
pub struct Headline {
    /// Leads that became MQLs / leads created.
    pub lead_qualification_rate: Option<f64>,
    /// Leads that reached `won` / leads created.
    pub lead_to_sales_rate: Option<f64>,
    /// The policy whose response time is shown: the first on stage `mql`, else the first.
    pub response_policy: Option<String>,
    /// Its median response (clock time, ms).
    pub lead_response_ms: Option<i64>,
    /// Revenue won, all paths.
    pub revenue: f64,
    /// Share of it that came through marketing-qualified leads.
    pub revenue_marketing_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Funnel {
    /// Distinct leads that reached each stage (`new`: leads created).
    pub leads_reached: StageCounts,
    /// MQL transitions: each is one MQL with its own outcome.
    pub mqls: u64,
    /// Each MQL's outcome: the stage its journey ended in within the horizon. They add up to
    /// `mqls`.
    pub outcomes: Outcomes,
    /// MQLs that reached each stage within the horizon (not exclusive).
    pub reached: Reached,
    pub conversion: Conversion,
    /// MQLs whose horizon reaches past the end of the history: their outcome may change.
    pub younger_than_horizon: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Outcomes {
    pub won: u64,
    pub lost: u64,
    pub sql: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub disqualified: u64,
    pub recycled: u64,
    pub open: u64,
}

impl Outcomes {
    pub fn total(&self) -> u64 {
        self.won
            + self.lost
            + self.sql
            + self.accepted
            + self.rejected
            + self.disqualified
            + self.recycled
            + self.open
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reached {
    pub sal: u64,
    pub sql: u64,
    /// Reached `sal`, then `sql`.
    pub sal_then_sql: u64,
    pub won: u64,
}

/// Conversion rates (0..1; `null` when the denominator is 0).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Conversion {
    pub mql_to_sal: Option<f64>,
    pub mql_to_sql: Option<f64>,
    pub mql_to_won: Option<f64>,
    pub sal_to_sql: Option<f64>,
    pub sql_to_won: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cohort {
    /// `YYYY-MM` of the MQL time in the report's time zone.
    pub month: String,
    pub mqls: u64,
    pub reached: Reached,
    pub conversion: Conversion,
    pub younger_than_horizon: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Velocity {
    pub mql_to_sal: Spread,
    pub sal_to_sql: Spread,
    pub sql_to_won: Spread,
}

/// Durations in ms: count, median and 90th percentile (nearest rank).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Spread {
    pub count: u64,
    pub median_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breakdowns {
    pub grade: Vec<Row>,
    pub reason: Vec<Row>,
    pub engagement_band: Vec<Row>,
    pub source: Vec<Row>,
    pub owner: Vec<Row>,
}

/// MQL conversion for one value of a breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub key: String,
    pub mqls: u64,
    pub reached: Reached,
    pub conversion: Conversion,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sla {
    pub policies: Vec<SlaRow>,
    /// One row per owner and policy.
    pub owners: Vec<SlaRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlaRow {
    pub policy: String,
    /// `null` on policy rows.
    pub owner: Option<String>,
    pub started: u64,
    pub met: u64,
    pub met_on_time: u64,
    pub breaches: u64,
    /// `met_on_time / started`.
    pub on_time_rate: Option<f64>,
    pub response_ms: Percentiles,
    pub response_business_ms: Percentiles,
    /// Met clocks by response time (clock time): counts at or below each bound (ms), the
    /// last bound `null` (above every bound). Policy rows only.
    pub distribution: Vec<Bucket>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub le_ms: Option<i64>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Revenue {
    /// Sum of the `amount` of `opportunity_won` events that moved a lead to `won`.
    pub total: f64,
    pub deals: u64,
    pub by_path: Vec<Money>,
    pub by_grade: Vec<Money>,
    pub by_source: Vec<Money>,
    /// Wins whose event had no `amount`.
    pub missing_amount: u64,
    /// Wins whose `amount` did not parse (not summed).
    pub invalid_amount: u64,
    /// Up to 10 of them: lead key and the text.
    pub invalid_examples: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Money {
    pub key: String,
    pub amount: f64,
    pub deals: u64,
}

/// How well the definition finds the leads that became opportunities (the comparison's row).
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub mqls: u64,
    /// Leads with at least one MQL.
    pub mql_leads: u64,
    /// Share of MQL'd leads that reached `sql` within the horizon after an MQL.
    pub precision: Option<f64>,
    /// Leads that reached `sql` in the history.
    pub sql_leads: u64,
    /// Share of those whose MQL came before their first `sql`.
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall.
    pub f1: Option<f64>,
    /// Median time from the MQL before it to the first `sql`, over the leads recall counts.
    pub median_mql_to_sql_ms: Option<i64>,
    /// Share of MQLs rejected by sales (`sales_rejected`) within the horizon.
    pub rejected_share: Option<f64>,
    pub sla_clocks_started: u64,
    pub sla_breaches: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Index into `definitions` of the best balance of precision and recall.
    pub best: Option<usize>,
    pub best_by: &'static str,
}

/// Nearest-rank percentile (`p` in (0, 1]) of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn rate(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn spread(mut v: Vec<i64>) -> Spread {
    v.sort_unstable();
    Spread {
        count: v.len() as u64,
        median_ms: percentile(&v, 0.5),
        p90_ms: percentile(&v, 0.9),
    }
}

impl Reached {
    fn add(&mut self, j: &Journey) {
        self.sal += u64::from(j.sal_at.is_some());
        self.sql += u64::from(j.sql_at.is_some());
        self.sal_then_sql += u64::from(j.sal_then_sql);
        self.won += u64::from(j.won_at.is_some());
    }

    fn conversion(&self, mqls: u64) -> Conversion {
        Conversion {
            mql_to_sal: rate(self.sal, mqls),
            mql_to_sql: rate(self.sql, mqls),
            mql_to_won: rate(self.won, mqls),
            sal_to_sql: rate(self.sal_then_sql, self.sal),
            sql_to_won: rate(self.won, self.sql),
        }
    }
}

/// One MQL and what followed it within the horizon, up to the lead's next MQL.
struct Journey<'a> {
    lead: &'a str,
    mql: &'a Change,
    sal_at: Option<i64>,
    sql_at: Option<i64>,
    sal_then_sql: bool,
    won_at: Option<i64>,
    rejected: bool,
    /// The last change within the horizon: its stage, and whether it was `sales_rejected`.
    last: Option<(Stage, bool)>,
    owner: Option<u32>,
    young: bool,
}

impl Journey<'_> {
    /// The stage the MQL's journey ended in within the horizon (docs/analytics.md).
    fn outcome(&self, o: &mut Outcomes) {
        let slot = match self.last {
            None | Some((Stage::Mql | Stage::New, _)) => &mut o.open,
            Some((Stage::Sal, _)) => &mut o.accepted,
            Some((Stage::Sql, _)) => &mut o.sql,
            Some((Stage::Won, _)) => &mut o.won,
            Some((Stage::Lost, _)) => &mut o.lost,
            Some((Stage::Disqualified, _)) => &mut o.disqualified,
            Some((Stage::Recycled, true)) => &mut o.rejected,
            Some((Stage::Recycled, false)) => &mut o.recycled,
        };
        *slot += 1;
    }
}

fn journeys<'a>(
    lead: &'a str,
    track: &'a LeadTrack,
    horizon: i64,
    end: Option<i64>,
) -> Vec<Journey<'a>> {
    let ch = &track.changes;
    let mut out = Vec::new();
    for (i, mql) in ch.iter().enumerate().filter(|(_, c)| c.to == Stage::Mql) {
        let limit = mql.at.saturating_add(horizon);
        let mut j = Journey {
            lead,
            mql,
            sal_at: None,
            sql_at: None,
            sal_then_sql: false,
            won_at: None,
            rejected: false,
            last: None,
            owner: mql.owner,
            young: end.is_some_and(|e| limit > e),
        };
        for c in ch[i + 1..].iter().take_while(|c| c.to != Stage::Mql) {
            if c.at > limit {
                continue;
            }
            if c.owner.is_some() {
                j.owner = c.owner;
            }
            j.last = Some((c.to, c.rejected));
            match c.to {
                Stage::Sal => {
                    j.sal_at.get_or_insert(c.at);
                }
                Stage::Sql if j.sql_at.is_none() => {
                    j.sql_at = Some(c.at);
                    j.sal_then_sql = j.sal_at.is_some();
                }
                Stage::Won => {
                    j.won_at.get_or_insert(c.at);
                }
                Stage::Recycled if c.rejected => j.rejected = true,
                _ => {}
            }
        }
        out.push(j);
    }
    out
}

/// What a definition's run produced, for [`build`].
pub(crate) struct RunResult<'a> {
    pub label: String,
    pub definition: String,
    pub rules: &'a Ruleset,
    pub collector: &'a Collector,
    /// Leads created (each creation starts clocks on `new`).
    pub created: u64,
}

fn band_label(bands: &[f64], v: f64) -> (usize, String) {
    let fmt = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x}")
        }
    };
    match bands.iter().rposition(|b| v >= *b) {
        None => (0, format!("<{}", fmt(bands[0]))),
        Some(i) if i + 1 == bands.len() => (i + 1, format!("{}+", fmt(bands[i]))),
        Some(i) => (i + 1, format!("{}-{}", fmt(bands[i]), fmt(bands[i + 1]))),
    }
}

const DISTRIBUTION_BOUNDS_MS: [i64; 8] = [
    60_000,
    300_000,
    900_000,
    3_600_000,
    4 * 3_600_000,
    86_400_000,
    3 * 86_400_000,
    7 * 86_400_000,
];

#[derive(Default)]
struct SlaAcc {
    started: u64,
    met: u64,
    on_time: u64,
    breaches: u64,
    resp: Vec<i64>,
    biz: Vec<i64>,
}

impl SlaAcc {
    fn row(mut self, policy: &str, owner: Option<String>, distribution: bool) -> SlaRow {
        self.resp.sort_unstable();
        self.biz.sort_unstable();
        let dist = if distribution {
            let mut buckets: Vec<Bucket> = DISTRIBUTION_BOUNDS_MS
                .iter()
                .map(|b| Bucket {
                    le_ms: Some(*b),
                    count: 0,
                })
                .chain(std::iter::once(Bucket {
                    le_ms: None,
                    count: 0,
                }))
                .collect();
            for r in &self.resp {
                let i = DISTRIBUTION_BOUNDS_MS
                    .iter()
                    .position(|b| r <= b)
                    .unwrap_or(DISTRIBUTION_BOUNDS_MS.len());
                buckets[i].count += 1;
            }
            buckets
        } else {
            Vec::new()
        };
        SlaRow {
            policy: policy.to_string(),
            owner,
            started: self.started,
            met: self.met,
            met_on_time: self.on_time,
            breaches: self.breaches,
            on_time_rate: rate(self.on_time, self.started),
            response_ms: Percentiles {
                p50: percentile(&self.resp, 0.5),
                p95: percentile(&self.resp, 0.95),
            },
            response_business_ms: Percentiles {
                p50: percentile(&self.biz, 0.5),
                p95: percentile(&self.biz, 0.95),
            },
            distribution: dist,
        }
    }
}

fn micros_to_f64(m: i128) -> f64 {
    // Whole units and the remainder apart, so sums up to 2^53 units stay exact to the cent.
    (m / 1_000_000) as f64 + (m % 1_000_000) as f64 / 1e6
}

/// Builds one definition's report.
pub(crate) fn build(
    run: RunResult<'_>,
    facts: &Facts,
    settings: &ReportSettings,
) -> DefinitionReport {
    let c = run.collector;
    let horizon = settings.horizon_ms;
    // Sorted lead keys: every figure is independent of hash order.
    let mut keys: Vec<&str> = c.leads.keys().map(|k| &**k).collect();
    keys.sort_unstable();

    let mut leads_reached = StageCounts::default();
    leads_reached.0[Stage::New.index()] = run.created;

    let mut outcomes = Outcomes::default();
    let mut reached = Reached::default();
    let mut mqls = 0u64;
    let mut young = 0u64;
    let mut cohorts: BTreeMap<String, (u64, Reached, u64)> = BTreeMap::new();
    let (mut v_sal, mut v_sql, mut v_won) = (Vec::new(), Vec::new(), Vec::new());
    let mut by: [BTreeMap<(usize, String), (u64, Reached)>; 5] = Default::default();
    let grade_rank = |g: &str| {
        run.rules
            .grades
            .iter()
            .position(|x| x.grade == g)
            .unwrap_or(run.rules.grades.len())
    };
    // Quality.
    let (mut mql_leads, mut mql_leads_to_sql, mut sql_leads, mut recalled) =
        (0u64, 0u64, 0u64, 0u64);
    let mut lead_times = Vec::new();
    let mut rejected = 0u64;
    // Revenue.
    let mut total: i128 = 0;
    let mut deals = 0u64;
    let (mut missing, mut invalid) = (0u64, 0u64);
    let mut invalid_examples = Vec::new();
    let mut by_path: BTreeMap<String, (i128, u64)> = BTreeMap::new();
    let mut by_grade: BTreeMap<(usize, String), (i128, u64)> = BTreeMap::new();
    let mut by_source: BTreeMap<String, (i128, u64)> = BTreeMap::new();

    for key in &keys {
        let track = &c.leads[*key];
        let mut stages_seen = [false; 8];
        for ch in &track.changes {
            stages_seen[ch.to.index()] = true;
        }
        for st in Stage::ALL.iter().filter(|s| **s != Stage::New) {
            if stages_seen[st.index()] {
                leads_reached.0[st.index()] += 1;
            }
        }
        let js = journeys(key, track, horizon, facts.end);
        if !js.is_empty() {
            mql_leads += 1;
            if js.iter().any(|j| j.sql_at.is_some()) {
                mql_leads_to_sql += 1;
            }
        }
        for j in &js {
            mqls += 1;
            j.outcome(&mut outcomes);
            reached.add(j);
            young += u64::from(j.young);
            rejected += u64::from(j.rejected);
            let month = settings
                .timezone
                .timestamp_millis_opt(j.mql.at)
                .single()
                .map_or_else(|| "?".to_string(), |d| d.format("%Y-%m").to_string());
            let e = cohorts.entry(month).or_default();
            e.0 += 1;
            e.1.add(j);
            e.2 += u64::from(j.young);
            if let Some(s) = j.sal_at {
                v_sal.push((s - j.mql.at).max(0));
            }
            if let (Some(s), Some(q), true) = (j.sal_at, j.sql_at, j.sal_then_sql) {
                v_sql.push((q - s).max(0));
            }
            if let (Some(q), Some(w)) = (j.sql_at, j.won_at) {
                v_won.push((w - q).max(0));
            }
            let grade = &c.grades[j.mql.grade as usize];
            let (band_i, band) = band_label(&settings.engagement_bands, j.mql.engagement);
            let owner = j
                .owner
                .map_or("unassigned".to_string(), |o| c.owners[o as usize].clone());
            let keys: [(usize, String); 5] = [
                (grade_rank(grade), grade.clone()),
                (
                    usize::from(j.mql.fast_track),
                    if j.mql.fast_track {
                        "fast_track"
                    } else {
                        "score"
                    }
                    .to_string(),
                ),
                (band_i, band),
                (0, facts.source(j.lead).to_string()),
                (0, owner),
            ];
            for (map, k) in by.iter_mut().zip(keys) {
                let e = map.entry(k).or_default();
                e.0 += 1;
                e.1.add(j);
            }
        }
        // Recall: the first `sql`, and the MQL before it.
        if let Some(first_sql) = track.changes.iter().position(|c| c.to == Stage::Sql) {
            sql_leads += 1;
            if let Some(m) = track.changes[..first_sql]
                .iter()
                .rev()
                .find(|c| c.to == Stage::Mql)
            {
                recalled += 1;
                lead_times.push((track.changes[first_sql].at - m.at).max(0));
            }
        }
        // Revenue: each won, by the path to its `sql`.
        for (i, ch) in track.changes.iter().enumerate() {
            let Some(amount) = &ch.amount else { continue };
            deals += 1;
            let sql = track.changes[..i].iter().rposition(|c| c.to == Stage::Sql);
            let mql =
                sql.and_then(|s| track.changes[..s].iter().rev().find(|c| c.to == Stage::Mql));
            let micros = match amount {
                Amount::Micros(m) => *m,
                Amount::Missing => {
                    missing += 1;
                    0
                }
                Amount::Invalid(text) => {
                    invalid += 1;
                    if invalid_examples.len() < 10 {
                        invalid_examples.push((key.to_string(), text.to_string()));
                    }
                    0
                }
            };
            total += micros;
            let (path, grade) = match mql {
                Some(m) => {
                    let g = c.grades[m.grade as usize].clone();
                    ("marketing_qualified", (grade_rank(&g), g))
                }
                None => ("sales_sourced", (usize::MAX, "no MQL".to_string())),
            };
            for (map, k) in [
                (&mut by_path, path.to_string()),
                (&mut by_source, facts.source(key).to_string()),
            ] {
                let e = map.entry(k).or_default();
                e.0 += micros;
                e.1 += 1;
            }
            let e = by_grade.entry(grade).or_default();
            e.0 += micros;
            e.1 += 1;
        }
    }

    // SLA: clocks per policy and per owner.
    let policies = &run.rules.sla;
    let mut per_policy: Vec<SlaAcc> = policies.iter().map(|_| SlaAcc::default()).collect();
    let mut per_owner: BTreeMap<(String, usize), SlaAcc> = BTreeMap::new();
    for key in &keys {
        for clock in &c.leads[*key].clocks {
            let owner = clock
                .owner
                .map_or("unassigned".to_string(), |o| c.owners[o as usize].clone());
            for acc in [
                &mut per_policy[clock.policy as usize],
                per_owner.entry((owner, clock.policy as usize)).or_default(),
            ] {
                acc.started += 1;
                acc.breaches += u64::from(clock.breached);
                if let Some((r, b, on_time)) = clock.met {
                    acc.met += 1;
                    acc.on_time += u64::from(on_time);
                    acc.resp.push(r);
                    acc.biz.push(b);
                }
            }
        }
    }
    // Clocks on `new` start at every creation; those that left no record were not seen.
    for (i, p) in policies.iter().enumerate() {
        if p.stage == Stage::New {
            let seen = per_policy[i].started;
            let unseen = run.created.saturating_sub(seen);
            per_policy[i].started += unseen;
            if unseen > 0 {
                per_owner
                    .entry(("unassigned".to_string(), i))
                    .or_default()
                    .started += unseen;
            }
        }
    }
    let sla_started: u64 = per_policy.iter().map(|a| a.started).sum();
    let sla_breaches: u64 = per_policy.iter().map(|a| a.breaches).sum();
    let sla = Sla {
        policies: per_policy
            .into_iter()
            .zip(policies)
            .map(|(acc, p)| acc.row(&p.name, None, true))
            .collect(),
        owners: per_owner
            .into_iter()
            .map(|((owner, i), acc)| acc.row(&policies[i].name, Some(owner), false))
            .collect(),
    };

    let rows = |map: BTreeMap<(usize, String), (u64, Reached)>, by_count: bool| {
        let mut rows: Vec<Row> = map
            .into_iter()
            .map(|((_, key), (n, r))| Row {
                key,
                mqls: n,
                conversion: r.conversion(n),
                reached: r,
            })
            .collect();
        if by_count {
            // Most MQLs first; ties by name (the map's order).
            rows.sort_by_key(|r| std::cmp::Reverse(r.mqls));
        }
        rows
    };
    let [g, r, e, s, o] = by;
    let money = |map: BTreeMap<String, (i128, u64)>| {
        let mut v: Vec<Money> = map
            .into_iter()
            .map(|(key, (m, deals))| Money {
                key,
                amount: micros_to_f64(m),
                deals,
            })
            .collect();
        v.sort_by(|a, b| b.amount.total_cmp(&a.amount));
        v
    };
    let precision = rate(mql_leads_to_sql, mql_leads);
    let recall = rate(recalled, sql_leads);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    lead_times.sort_unstable();
    let created = run.created;
    let reached_stage = |s: &str| leads_reached.get(s);
    let response = policies
        .iter()
        .position(|p| p.stage == Stage::Mql)
        .or((!policies.is_empty()).then_some(0));
    let mq_revenue = by_path.get("marketing_qualified").map_or(0, |e| e.0);
    let headline = Headline {
        lead_qualification_rate: rate(reached_stage("mql"), created),
        lead_to_sales_rate: rate(reached_stage("won"), created),
        response_policy: response.map(|i| policies[i].name.clone()),
        lead_response_ms: response.and_then(|i| sla.policies[i].response_ms.p50),
        revenue: micros_to_f64(total),
        revenue_marketing_share: (total > 0).then(|| mq_revenue as f64 / total as f64),
    };
    DefinitionReport {
        headline,
        label: run.label,
        definition: run.definition,
        mql_threshold: run.rules.funnel.mql_threshold,
        funnel: Funnel {
            leads_reached,
            mqls,
            conversion: reached.conversion(mqls),
            outcomes,
            reached,
            younger_than_horizon: young,
        },
        cohorts: cohorts
            .into_iter()
            .map(|(month, (n, r, young))| Cohort {
                month,
                mqls: n,
                conversion: r.conversion(n),
                reached: r,
                younger_than_horizon: young,
            })
            .collect(),
        velocity: Velocity {
            mql_to_sal: spread(v_sal),
            sal_to_sql: spread(v_sql),
            sql_to_won: spread(v_won),
        },
        breakdowns: Breakdowns {
            grade: rows(g, false),
            reason: rows(r, false),
            engagement_band: rows(e, false),
            source: rows(s, true),
            owner: rows(o, true),
        },
        sla,
        revenue: Revenue {
            total: micros_to_f64(total),
            deals,
            by_path: money(by_path),
            by_grade: {
                let mut v: Vec<Money> = by_grade
                    .into_iter()
                    .map(|((_, key), (m, deals))| Money {
                        key,
                        amount: micros_to_f64(m),
                        deals,
                    })
                    .collect();
                v.sort_by_key(|m| m.key == "no MQL");
                v
            },
            by_source: money(by_source),
            missing_amount: missing,
            invalid_amount: invalid,
            invalid_examples,
        },
        quality: Quality {
            mqls,
            mql_leads,
            precision,
            sql_leads,
            recall,
            f1,
            median_mql_to_sql_ms: percentile(&lead_times, 0.5),
            rejected_share: rate(rejected, mqls),
            sla_clocks_started: sla_started,
            sla_breaches,
        },
    }
}

/// The comparison: which definition balances precision and recall best (highest F1; ties go
/// to the earlier definition).
pub fn compare(defs: &[DefinitionReport]) -> Option<Comparison> {
    if defs.len() < 2 {
        return None;
    }
    let mut best: Option<(usize, f64)> = None;
    for (i, d) in defs.iter().enumerate() {
        if let Some(f) = d.quality.f1 {
            if best.is_none_or(|(_, b)| f > b) {
                best = Some((i, f));
            }
        }
    }
    Some(Comparison {
        best: best.map(|(i, _)| i),
        best_by: "f1",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.9), Some(9));
        assert_eq!(percentile(&v, 0.95), Some(10));
        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn engagement_bands() {
        let b = [0.0, 50.0, 100.0];
        assert_eq!(band_label(&b, -3.0).1, "<0");
        assert_eq!(band_label(&b, 0.0).1, "0-50");
        assert_eq!(band_label(&b, 99.9).1, "50-100");
        assert_eq!(band_label(&b, 100.0).1, "100+");
    }
}
