//! Business-hours calendars (SPEC §6): weekly opening hours in an IANA time zone, minus
//! holidays. SLA durations with a calendar count only open time.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

const MINUTES_PER_DAY: u32 = 24 * 60;
/// How far ahead business time is searched (days). A calendar with some opening hours finds
/// one within a week unless holidays cover it, and holidays are a finite list.
const SEARCH_DAYS: u32 = 366 * 30;

/// Opening range within one local day, in minutes since local midnight; `close` may be 1440.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub open: u32,
    pub close: u32,
}

/// The first year whose days a calendar keeps as UTC instants once worked out.
const MEMO_FIRST_YEAR: i32 = 1970;
/// How many years from [`MEMO_FIRST_YEAR`] on (to 2225); days outside are worked out each time.
const MEMO_YEARS: usize = 256;

/// One local year's opening ranges as UTC instants, `(opening, closing)` as
/// [`Calendar::local_ms`] gives them, in day order: day `d`'s (from 0 for 1 January) are
/// `spans[starts[d]..starts[d + 1]]`.
#[derive(Debug)]
struct YearSpans {
    starts: Vec<u32>,
    spans: Vec<(i64, i64)>,
}

/// Ranges per day up to which a calendar remembers its instants: a year then holds at most
/// 366 × 4 pairs (23 KiB), all 256 years 6 MiB. More (hours cut into many ranges) are
/// worked out each time.
const MEMO_MAX_RANGES: usize = 4;

/// A business-hours calendar. Built by [`Calendar::new`]: its time zone and weekly hours
/// are fixed from then on, because the UTC instants of its openings and closings are
/// remembered (a year at a time, on the year's first use). Why: each was a time zone lookup
/// (a binary search of the zone's transitions; about 600 instructions with chrono's own
/// work), four or more per SLA clock started or met: 6.7% of replay's fold thread with the
/// example config (docs/performance.md).
#[derive(Clone)]
pub struct Calendar {
    pub name: String,
    tz: Tz,
    /// Index 0 = Monday.
    week: [Vec<Range>; 7],
    pub holidays: BTreeSet<NaiveDate>,
    /// Year `MEMO_FIRST_YEAR + i` in slot `i`, filled on first use; `None` there if one of
    /// the year's instants could not be worked out (then each day is worked out each time).
    /// Shared by clones, which have the same zone and hours. Empty when a day has more than
    /// [`MEMO_MAX_RANGES`] ranges.
    memo: Arc<[OnceLock<Option<YearSpans>>]>,
}

/// The calendar as configured; of the memo, only how many years it holds.
impl std::fmt::Debug for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calendar")
            .field("name", &self.name)
            .field("tz", &self.tz)
            .field("week", &self.week)
            .field("holidays", &self.holidays)
            .field(
                "remembered_years",
                &self.memo.iter().filter(|y| y.get().is_some()).count(),
            )
            .finish()
    }
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses `"09:00-17:00"` or several ranges `"09:00-12:00,13:00-17:00"` (ascending, not
/// overlapping). `24:00` is allowed as a closing time.
pub fn parse_hours(text: &str) -> Result<Vec<Range>, String> {
    let mut out: Vec<Range> = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (a, b) = part
            .split_once('-')
            .ok_or_else(|| format!("{part:?} is not a range HH:MM-HH:MM"))?;
        let open = parse_hhmm(a.trim())?;
        let close = parse_hhmm(b.trim())?;
        if open >= close {
            return Err(format!("{part:?} opens at or after it closes"));
        }
        if open == MINUTES_PER_DAY {
            return Err(format!("{part:?} opens at 24:00"));
        }
        if let Some(prev) = out.last() {
            if open < prev.close {
                return Err(format!(
                    "{part:?} overlaps or precedes the range before it (ranges must ascend)"
                ));
            }
        }
        out.push(Range { open, close });
    }
    Ok(out)
}

fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time HH:MM between 00:00 and 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Calendar {
    /// A calendar of `week`'s opening ranges (index 0 = Monday) in `tz`, closed on `holidays`.
    pub fn new(
        name: String,
        tz: Tz,
        week: [Vec<Range>; 7],
        holidays: BTreeSet<NaiveDate>,
    ) -> Calendar {
        let years = if week.iter().all(|d| d.len() <= MEMO_MAX_RANGES) {
            MEMO_YEARS
        } else {
            0
        };
        Calendar {
            name,
            tz,
            week,
            holidays,
            memo: (0..years).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The IANA time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The opening ranges of each weekday, index 0 = Monday.
    pub fn week(&self) -> &[Vec<Range>; 7] {
        &self.week
    }

    /// The opening ranges of local day `date` as UTC instants `(opening, closing)`, in order,
    /// from the memo; `None` for a day outside it (or of a year it could not hold): then the
    /// caller works each instant out itself, as it is needed.
    fn remembered(&self, date: NaiveDate) -> Option<&[(i64, i64)]> {
        let slot = usize::try_from(date.year() - MEMO_FIRST_YEAR).ok()?;
        let year = self
            .memo
            .get(slot)?
            .get_or_init(|| self.year_spans(date.year()))
            .as_ref()?;
        let d = date.ordinal0() as usize;
        let (a, b) = (*year.starts.get(d)?, *year.starts.get(d + 1)?);
        year.spans.get(a as usize..b as usize)
    }

    /// Every opening and closing of `year` as UTC instants; `None` if one has none.
    fn year_spans(&self, year: i32) -> Option<YearSpans> {
        let mut date = NaiveDate::from_yo_opt(year, 1)?;
        let mut out = YearSpans {
            starts: vec![0],
            spans: Vec::with_capacity(366 * 2),
        };
        while date.year() == year {
            for r in self.day(date) {
                out.spans
                    .push((self.local_ms(date, r.open)?, self.local_ms(date, r.close)?));
            }
            out.starts.push(out.spans.len() as u32);
            date = date.succ_opt()?;
        }
        Some(out)
    }

    /// The UTC instant (ms) of the closing (`closing`) or the opening of range `k` of
    /// `date`, `r`: from `spans`, the day's remembered instants, when given; else worked out.
    #[inline]
    fn instant(
        &self,
        spans: Option<&[(i64, i64)]>,
        date: NaiveDate,
        k: usize,
        r: &Range,
        closing: bool,
    ) -> Option<i64> {
        match spans.and_then(|s| s.get(k)) {
            Some(&(open, close)) => Some(if closing { close } else { open }),
            None => self.local_ms(date, if closing { r.close } else { r.open }),
        }
    }

    /// The opening ranges of `date`'s weekday.
    fn day(&self, date: NaiveDate) -> &[Range] {
        &self.week[date.weekday().num_days_from_monday() as usize]
    }

    /// The instant (ms) reached by adding `business_ms` of open time to `start`. A start outside
    /// business hours counts from the next opening; an amount that ends exactly at a closing
    /// time ends there. `None` only when the times leave chrono's range (hostile input) or
    /// no open time exists in the search window.
    pub fn add_business(&self, start: i64, business_ms: i64) -> Option<i64> {
        let mut remaining = business_ms.max(0);
        let start_utc = DateTime::from_timestamp_millis(start)?;
        let mut date = start_utc.with_timezone(&self.tz).date_naive();
        // A range can begin on the previous local day only if it closed at 24:00 after a DST
        // change; starting one day early is cheap and covers it.
        date = date.pred_opt()?;
        for _ in 0..SEARCH_DAYS {
            if !self.holidays.contains(&date) {
                let spans = self.remembered(date);
                for (k, r) in self.day(date).iter().enumerate() {
                    // The closing time first: ranges over before `start` (the day before's,
                    // always) need no opening time, a lookup of its own when not remembered.
                    let close = self.instant(spans, date, k, r, true)?;
                    if close <= start {
                        continue;
                    }
                    let from = self.instant(spans, date, k, r, false)?.max(start);
                    let available = close - from;
                    if remaining <= available {
                        return Some(from + remaining);
                    }
                    remaining -= available;
                }
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The open time (ms) inside `[start, end]`: the total length of the calendar's open
    /// hours between the two instants (SPEC §6, `response_business_ms`); 0 when
    /// `end <= start`. Days past the search window (30 years) are not counted; `None` only
    /// when the times leave chrono's range.
    pub fn business_between(&self, start: i64, end: i64) -> Option<i64> {
        if end <= start {
            return Some(0);
        }
        let start_utc = DateTime::from_timestamp_millis(start)?;
        let end_utc = DateTime::from_timestamp_millis(end)?;
        // One day early, as in `add_business` (a range that closed at 24:00 across DST).
        let mut date = start_utc.with_timezone(&self.tz).date_naive().pred_opt()?;
        let last = end_utc.with_timezone(&self.tz).date_naive();
        let mut total = 0i64;
        for _ in 0..SEARCH_DAYS {
            if date > last {
                break;
            }
            if !self.holidays.contains(&date) {
                let spans = self.remembered(date);
                for (k, r) in self.day(date).iter().enumerate() {
                    // As in `add_business`: a range over before `start` adds nothing.
                    let close = self.instant(spans, date, k, r, true)?.min(end);
                    if close <= start {
                        continue;
                    }
                    let open = self.instant(spans, date, k, r, false)?.max(start);
                    total += (close - open).max(0);
                }
            }
            date = date.succ_opt()?;
        }
        Some(total)
    }

    /// Local wall time `minutes` after midnight of `date` as a UTC instant (ms). A local time
    /// skipped by a DST change maps to the first instant after the gap; a repeated one to the
    /// earlier instant.
    fn local_ms(&self, date: NaiveDate, minutes: u32) -> Option<i64> {
        let (date, minutes) = if minutes >= MINUTES_PER_DAY {
            (date.succ_opt()?, minutes - MINUTES_PER_DAY)
        } else {
            (date, minutes)
        };
        let mut naive = NaiveDateTime::new(
            date,
            NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0)?,
        );
        // DST gaps are at most a few hours; step minute by minute to the first valid time.
        for _ in 0..(MINUTES_PER_DAY) {
            match self.tz.from_local_datetime(&naive) {
                LocalResult::Single(t) => return Some(t.timestamp_millis()),
                LocalResult::Ambiguous(a, _) => return Some(a.timestamp_millis()),
                LocalResult::None => naive += chrono::Duration::minutes(1),
            }
        }
        None
    }

    pub fn has_open_time(&self) -> bool {
        self.week.iter().any(|d| !d.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("valid rfc3339")
            .timestamp_millis()
    }

    fn nine_to_five(tz: Tz, holidays: &[&str]) -> Calendar {
        with_sunday(tz, holidays, vec![])
    }

    /// Nine to five on weekdays, `sunday`'s ranges on Sundays.
    fn with_sunday(tz: Tz, holidays: &[&str], sunday: Vec<Range>) -> Calendar {
        let day = parse_hours("09:00-17:00").expect("valid hours");
        Calendar::new(
            "t".into(),
            tz,
            [
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day,
                vec![],
                sunday,
            ],
            holidays
                .iter()
                .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("date"))
                .collect(),
        )
    }

    const H: i64 = 3_600_000;

    #[test]
    fn business_time_between_two_instants() {
        let c = nine_to_five(chrono_tz::America::New_York, &["2026-11-26"]);
        // Issue 13: arrives Friday 16:55, answered Monday 09:05: 5 + 5 business minutes.
        let fri = ms("2026-11-20T16:55:00-05:00");
        let mon = ms("2026-11-23T09:05:00-05:00");
        assert_eq!(c.business_between(fri, mon), Some(10 * 60_000));
        assert_eq!(c.business_between(mon, fri), Some(0), "end before start");
        assert_eq!(c.business_between(fri, fri), Some(0));
        // Wednesday 16:00 to Friday 10:00 over Thanksgiving (Thursday): 1 h + 1 h.
        let wed = ms("2026-11-25T16:00:00-05:00");
        let fri2 = ms("2026-11-27T10:00:00-05:00");
        assert_eq!(c.business_between(wed, fri2), Some(2 * H));
        // Entirely outside hours.
        let sat = ms("2026-11-21T10:00:00-05:00");
        let sun = ms("2026-11-22T18:00:00-05:00");
        assert_eq!(c.business_between(sat, sun), Some(0));
        // The inverse of add_business from inside the hours.
        let s = ms("2026-11-23T09:45:00-05:00");
        for x in [
            0,
            1,
            30 * 60_000,
            4 * H,
            7 * H + 15 * 60_000,
            20 * H,
            100 * H,
        ] {
            let end = c.add_business(s, x).expect("end");
            assert_eq!(c.business_between(s, end), Some(x), "{x}");
        }
    }

    #[test]
    fn inside_hours_adds_plainly() {
        let c = nine_to_five(chrono_tz::America::New_York, &[]);
        // Mon 2026-11-23 09:45 EST + 4h = 13:45 EST
        let s = ms("2026-11-23T09:45:00-05:00");
        assert_eq!(
            c.add_business(s, 4 * H),
            Some(ms("2026-11-23T13:45:00-05:00"))
        );
    }

    #[test]
    fn friday_evening_rolls_over_the_weekend() {
        let c = nine_to_five(chrono_tz::America::New_York, &[]);
        let s = ms("2026-11-20T16:30:00-05:00");
        assert_eq!(
            c.add_business(s, 4 * H),
            Some(ms("2026-11-23T12:30:00-05:00"))
        );
        assert_eq!(
            c.add_business(s, 3 * H),
            Some(ms("2026-11-23T11:30:00-05:00"))
        );
    }

    #[test]
    fn start_before_opening_counts_from_opening() {
        let c = nine_to_five(chrono_tz::America::New_York, &[]);
        let s = ms("2026-11-24T08:00:00-05:00");
        assert_eq!(
            c.add_business(s, 4 * H),
            Some(ms("2026-11-24T13:00:00-05:00"))
        );
        // Zero business time from outside hours is the next opening.
        assert_eq!(c.add_business(s, 0), Some(ms("2026-11-24T09:00:00-05:00")));
    }

    #[test]
    fn ending_exactly_at_closing_stays_at_closing() {
        let c = nine_to_five(chrono_tz::America::New_York, &[]);
        let s = ms("2026-11-24T13:00:00-05:00");
        assert_eq!(
            c.add_business(s, 4 * H),
            Some(ms("2026-11-24T17:00:00-05:00"))
        );
    }

    #[test]
    fn holidays_are_skipped() {
        // Thanksgiving 2026-11-26 (Thu) closed: Wed 15:00 + 4h = Fri 11:00.
        let c = nine_to_five(chrono_tz::America::New_York, &["2026-11-26"]);
        let s = ms("2026-11-25T15:00:00-05:00");
        assert_eq!(
            c.add_business(s, 4 * H),
            Some(ms("2026-11-27T11:00:00-05:00"))
        );
    }

    #[test]
    fn dst_end_in_new_york() {
        // DST ends Sun 2026-11-01. Fri 2026-10-30 16:00 EDT (20:00Z) + 2h business
        // = Mon 2026-11-02 10:00 EST (15:00Z): the offset of each opening is its own.
        let c = nine_to_five(chrono_tz::America::New_York, &[]);
        let s = ms("2026-10-30T16:00:00-04:00");
        assert_eq!(
            c.add_business(s, 2 * H),
            Some(ms("2026-11-02T10:00:00-05:00"))
        );
        assert_eq!(ms("2026-11-02T10:00:00-05:00") - s, (2 * 24 + 19) * H);
    }

    #[test]
    fn dst_start_in_berlin() {
        // DST starts Sun 2026-03-29 in Europe/Berlin: Fri 2026-03-27 16:00 CET (15:00Z) + 2h
        // = Mon 10:00 CEST (08:00Z).
        let c = nine_to_five(chrono_tz::Europe::Berlin, &[]);
        let s = ms("2026-03-27T16:00:00+01:00");
        assert_eq!(
            c.add_business(s, 2 * H),
            Some(ms("2026-03-30T10:00:00+02:00"))
        );
    }

    #[test]
    fn opening_inside_a_dst_gap_opens_after_the_gap() {
        // 2026-03-08 in New York: 02:00-03:00 does not exist.
        let c = with_sunday(
            chrono_tz::America::New_York,
            &[],
            parse_hours("02:30-04:00").expect("valid"),
        );
        let s = ms("2026-03-08T00:00:00-05:00");
        // Opens 03:00 EDT (07:00Z), one hour of business time to 04:00 EDT.
        assert_eq!(
            c.add_business(s, 30 * 60_000),
            Some(ms("2026-03-08T03:30:00-04:00"))
        );
    }

    #[test]
    fn split_days_and_midnight_close() {
        let mut week = nine_to_five(chrono_tz::UTC, &[]).week().clone();
        week[0] = parse_hours("09:00-12:00, 13:00-24:00").expect("valid");
        let c = Calendar::new("t".into(), chrono_tz::UTC, week, BTreeSet::new());
        let s = ms("2026-11-23T11:00:00Z");
        assert_eq!(c.add_business(s, 2 * H), Some(ms("2026-11-23T14:00:00Z")));
        // 1h before lunch + 11h to midnight: ends exactly at Monday's 24:00 close.
        assert_eq!(c.add_business(s, 12 * H), Some(ms("2026-11-24T00:00:00Z")));
        assert_eq!(c.add_business(s, 13 * H), Some(ms("2026-11-24T10:00:00Z")));
    }

    /// `add_business` as it was before the memo: every instant worked out when needed (the
    /// model for the property test below).
    fn add_business_directly(c: &Calendar, start: i64, business_ms: i64) -> Option<i64> {
        let mut remaining = business_ms.max(0);
        let start_utc = DateTime::from_timestamp_millis(start)?;
        let mut date = start_utc.with_timezone(&c.tz).date_naive().pred_opt()?;
        for _ in 0..SEARCH_DAYS {
            if !c.holidays.contains(&date) {
                for r in c.day(date) {
                    let close = c.local_ms(date, r.close)?;
                    if close <= start {
                        continue;
                    }
                    let from = c.local_ms(date, r.open)?.max(start);
                    if remaining <= close - from {
                        return Some(from + remaining);
                    }
                    remaining -= close - from;
                }
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// `business_between` as it was before the memo.
    fn business_between_directly(c: &Calendar, start: i64, end: i64) -> Option<i64> {
        if end <= start {
            return Some(0);
        }
        let tz = |t: i64| DateTime::from_timestamp_millis(t).map(|u| u.with_timezone(&c.tz));
        let mut date = tz(start)?.date_naive().pred_opt()?;
        let last = tz(end)?.date_naive();
        let mut total = 0i64;
        while date <= last {
            if !c.holidays.contains(&date) {
                for r in c.day(date) {
                    let close = c.local_ms(date, r.close)?.min(end);
                    if close > start {
                        total += (close - c.local_ms(date, r.open)?.max(start)).max(0);
                    }
                }
            }
            date = date.succ_opt()?;
        }
        Some(total)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// The remembered instants give what working each one out gives: zones with DST
        /// (gaps and repeated hours, a half-hour change, a day skipped by a date line move),
        /// ranges opening in a gap or closing at 24:00, holidays, and instants from 1960 to
        /// 2240, across both ends of the memo's years.
        #[test]
        fn remembered_instants_are_the_ones_worked_out(
            zone in 0usize..7,
            hours in 0usize..4,
            holiday in proptest::option::of(0u32..2000),
            start in -315_619_200_000i64..8_520_000_000_000,
            amount in 0i64..40 * 86_400_000,
        ) {
            let tz = [
                chrono_tz::UTC,
                chrono_tz::America::New_York,
                chrono_tz::Europe::Berlin,
                chrono_tz::Australia::Lord_Howe,
                chrono_tz::Asia::Kolkata,
                chrono_tz::Pacific::Apia,
                chrono_tz::America::Sao_Paulo,
            ][zone];
            let text = ["09:00-17:00", "00:00-24:00", "02:30-04:00, 13:00-24:00", "00:30-01:30"]
                [hours];
            let day = parse_hours(text).expect("valid");
            let mut week: [Vec<Range>; 7] = std::array::from_fn(|_| day.clone());
            week[5] = vec![];
            // A holiday near the start, so that some runs cross it.
            let holidays: BTreeSet<NaiveDate> = holiday
                .and_then(|d| {
                    let at = DateTime::from_timestamp_millis(start)?.date_naive();
                    at.checked_add_days(chrono::Days::new(u64::from(d % 20)))
                })
                .into_iter()
                .collect();
            let c = Calendar::new("t".into(), tz, week, holidays);
            proptest::prop_assert_eq!(
                c.add_business(start, amount),
                add_business_directly(&c, start, amount)
            );
            proptest::prop_assert_eq!(
                c.business_between(start, start + amount),
                business_between_directly(&c, start, start + amount)
            );
        }
    }

    /// Every day of the remembered years is remembered (no silent fall back to the slow
    /// path), with the instants `local_ms` gives; the days just outside are not. New York:
    /// DST changes every year, and a range that closes at 24:00 (on 31 December, the next
    /// year's midnight).
    #[test]
    fn every_day_of_the_remembered_years_is_remembered() {
        let mut week = nine_to_five(chrono_tz::America::New_York, &[])
            .week()
            .clone();
        week[5] = parse_hours("02:30-04:00, 20:00-24:00").expect("valid");
        let c = Calendar::new(
            "t".into(),
            chrono_tz::America::New_York,
            week,
            BTreeSet::new(),
        );
        let first = NaiveDate::from_ymd_opt(MEMO_FIRST_YEAR, 1, 1).expect("date");
        let last =
            NaiveDate::from_ymd_opt(MEMO_FIRST_YEAR + MEMO_YEARS as i32 - 1, 12, 31).expect("date");
        let mut date = first;
        let mut days = 0;
        while date <= last {
            let worked_out: Vec<(i64, i64)> = c
                .day(date)
                .iter()
                .map(|r| {
                    let at = |m| c.local_ms(date, m).expect("an instant");
                    (at(r.open), at(r.close))
                })
                .collect();
            assert_eq!(c.remembered(date), Some(worked_out.as_slice()), "{date}");
            days += 1;
            date = date.succ_opt().expect("date");
        }
        assert_eq!(days, 93_502, "1970 to 2225");
        assert_eq!(c.remembered(first.pred_opt().expect("date")), None);
        assert_eq!(c.remembered(last.succ_opt().expect("date")), None);
        // Too many ranges a day: nothing remembered, the same answers.
        let many = parse_hours("01:00-02:00,03:00-04:00,05:00-06:00,07:00-08:00,09:00-10:00")
            .expect("valid");
        let busy = Calendar::new(
            "t".into(),
            chrono_tz::UTC,
            std::array::from_fn(|_| many.clone()),
            BTreeSet::new(),
        );
        assert_eq!(busy.remembered(first), None);
        let s = ms("2026-11-23T01:30:00Z");
        assert_eq!(
            busy.add_business(s, 2 * H),
            Some(ms("2026-11-23T05:30:00Z"))
        );
    }

    /// Runs across both ends of the remembered years, and Apia's skipped 30 December 2011.
    #[test]
    fn runs_across_the_remembered_years_ends_are_the_ones_worked_out() {
        for (tz, start, hours) in [
            (
                chrono_tz::America::New_York,
                "1969-12-31T23:00:00-05:00",
                "09:00-17:00",
            ),
            (
                chrono_tz::America::New_York,
                "1969-12-29T12:00:00-05:00",
                "00:00-24:00",
            ),
            (
                chrono_tz::Pacific::Apia,
                "2225-12-31T20:00:00+13:00",
                "00:00-24:00",
            ),
            (
                chrono_tz::Australia::Lord_Howe,
                "2225-12-30T09:00:00+11:00",
                "09:00-17:00",
            ),
            (
                chrono_tz::Pacific::Apia,
                "2011-12-28T09:00:00-10:00",
                "09:00-17:00",
            ),
            (
                chrono_tz::Pacific::Apia,
                "2011-12-28T09:00:00-10:00",
                "00:00-24:00",
            ),
        ] {
            let day = parse_hours(hours).expect("valid");
            let c = Calendar::new("t".into(), tz, std::array::from_fn(|_| day.clone()), {
                BTreeSet::new()
            });
            let s = ms(start);
            for amount in [0, H / 2, 7 * H, 30 * H, 9 * 24 * H] {
                assert_eq!(
                    c.add_business(s, amount),
                    add_business_directly(&c, s, amount),
                    "{tz} {start} {hours} +{amount}"
                );
                assert_eq!(
                    c.business_between(s, s + amount),
                    business_between_directly(&c, s, s + amount),
                    "{tz} {start} {hours} +{amount}"
                );
            }
        }
    }

    #[test]
    fn hostile_times_do_not_panic() {
        let c = nine_to_five(chrono_tz::UTC, &[]);
        assert_eq!(c.add_business(i64::MAX, H), None);
        assert!(c.add_business(0, H).is_some());
    }

    #[test]
    fn hours_syntax_is_checked() {
        assert!(parse_hours("9-17").is_err());
        assert!(parse_hours("17:00-09:00").is_err());
        assert!(parse_hours("09:00-12:00,11:00-13:00").is_err());
        assert!(parse_hours("09:60-10:00").is_err());
        assert!(parse_hours("24:00-24:00").is_err());
        assert_eq!(
            parse_hours("00:00-24:00").expect("valid"),
            vec![Range {
                open: 0,
                close: 1440
            }]
        );
    }
}
