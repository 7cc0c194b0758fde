//! The logical input event (SPEC §2) and its validation.

use std::fmt;

use compact_str::CompactString;

use serde::{Deserialize, Serialize};

pub use super::limits::LeadKeyMode;
use super::limits::Limits;

/// Longest accepted `lead_key`, in bytes (SPEC §2).
pub const MAX_LEAD_KEY_BYTES: usize = 256;
/// Longest raw `lead_key` read before normalization (SPEC §2 limits the normalized key).
const RAW_LEAD_KEY_BYTES: usize = 4 * MAX_LEAD_KEY_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Web,
    Email,
    Crm,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Web, Source::Email, Source::Crm];

    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "web" => Some(Source::Web),
            "email" => Some(Source::Email),
            "crm" => Some(Source::Crm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Web => "web",
            Source::Email => "email",
            Source::Crm => "crm",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The closed set of CRM event types; any other crm type is invalid input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrmType {
    LeadUpsert,
    OwnerAssigned,
    SalesAccepted,
    SalesRejected,
    SalesActivity,
    Recycled,
    Disqualified,
    OpportunityCreated,
    OpportunityWon,
    OpportunityLost,
}

impl CrmType {
    pub const ALL: [CrmType; 10] = [
        CrmType::LeadUpsert,
        CrmType::OwnerAssigned,
        CrmType::SalesAccepted,
        CrmType::SalesRejected,
        CrmType::SalesActivity,
        CrmType::Recycled,
        CrmType::Disqualified,
        CrmType::OpportunityCreated,
        CrmType::OpportunityWon,
        CrmType::OpportunityLost,
    ];

    pub fn parse(s: &str) -> Option<CrmType> {
        CrmType::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CrmType::LeadUpsert => "lead_upsert",
            CrmType::OwnerAssigned => "owner_assigned",
            CrmType::SalesAccepted => "sales_accepted",
            CrmType::SalesRejected => "sales_rejected",
            CrmType::SalesActivity => "sales_activity",
            CrmType::Recycled => "recycled",
            CrmType::Disqualified => "disqualified",
            CrmType::OpportunityCreated => "opportunity_created",
            CrmType::OpportunityWon => "opportunity_won",
            CrmType::OpportunityLost => "opportunity_lost",
        }
    }
}

/// Known web and email types. Other web/email types are accepted (rules may name them).
pub const KNOWN_WEB_TYPES: [&str; 6] = [
    "page_view",
    "form_submit",
    "content_download",
    "webinar_attended",
    "demo_request",
    "chat_started",
];
pub const KNOWN_EMAIL_TYPES: [&str; 7] = [
    "delivered",
    "open",
    "click",
    "reply",
    "bounce",
    "unsubscribe",
    "spam_report",
];

/// A validated event. Attributes keep their input order; keys are unique.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Ids and types are short: held inline up to 24 bytes (`CompactString`), so the JSON
    /// scanner and the Avro reader allocate for neither (docs/performance.md).
    pub event_id: CompactString,
    pub lead_key: String,
    pub occurred_at: i64,
    pub source: Source,
    /// As `event_id`: inline up to 24 bytes.
    pub event_type: CompactString,
    /// `Some` exactly when `source` is crm.
    pub crm: Option<CrmType>,
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// Admits a decoded event as the engine will see it (SPEC §2, v2): the lead key
    /// normalized (`input.lead_key`) and checked again (non-empty, at most 256 bytes), the
    /// time checked against `now + limits.max_future` when `now` is given (Kafka ingest; replay
    /// with `--now`), then the input bounds of `limits`.
    pub fn admit(mut self, limits: &Limits, now: Option<i64>) -> Result<Event, Invalid> {
        if limits.lead_key == LeadKeyMode::Lowercase {
            if let std::borrow::Cow::Owned(k) = normalize_lead_key(limits.lead_key, &self.lead_key)
            {
                self.lead_key = k;
            }
            if self.lead_key.is_empty() {
                return Err(Invalid::EmptyField("lead_key"));
            }
        }
        if self.lead_key.len() > MAX_LEAD_KEY_BYTES {
            return Err(Invalid::LeadKeyTooLong(self.lead_key.len()));
        }
        if let Some(now) = now.filter(|_| limits.max_future_ms > 0) {
            if self.occurred_at > now.saturating_add(limits.max_future_ms) {
                return Err(Invalid::FutureTime {
                    at: self.occurred_at,
                    now,
                    limit_ms: limits.max_future_ms,
                });
            }
        }
        self.check_limits(limits)?;
        Ok(self)
    }

    /// The input bounds of `limits` on a decoded event (attribute count and sizes).
    pub fn check_limits(&self, limits: &Limits) -> Result<(), Invalid> {
        if self.attributes.len() > limits.max_attributes {
            return Err(Invalid::TooManyAttributes(
                self.attributes.len(),
                limits.max_attributes,
            ));
        }
        for (k, v) in &self.attributes {
            let len = k.len().max(v.len());
            if len > limits.max_attribute_bytes {
                return Err(Invalid::AttributeTooLong {
                    name: clip(k, NAME_SHOWN).to_string(),
                    len,
                    limit: limits.max_attribute_bytes,
                });
            }
        }
        Ok(())
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A lead key as `mode` reads it; borrowed when unchanged.
pub fn normalize_lead_key(mode: LeadKeyMode, key: &str) -> std::borrow::Cow<'_, str> {
    match mode {
        LeadKeyMode::Exact => std::borrow::Cow::Borrowed(key),
        LeadKeyMode::Lowercase => {
            let t = key.trim();
            if t.len() == key.len() && !t.chars().any(char::is_uppercase) {
                std::borrow::Cow::Borrowed(key)
            } else {
                std::borrow::Cow::Owned(t.to_lowercase())
            }
        }
    }
}

/// Why an input was rejected. `code()` is a short, bounded label (for metrics and DLQ headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The bytes could not be decoded at all (not JSON, not Avro of the expected schema...).
    Undecodable(String),
    MissingField(&'static str),
    EmptyField(&'static str),
    WrongType {
        field: String,
        expected: &'static str,
    },
    NegativeTime(i64),
    UnknownSource(String),
    UnknownCrmType(String),
    LeadKeyTooLong(usize),
    /// A JSON message names another source than the topic it arrived on.
    SourceMismatch {
        found: Source,
        topic: Source,
    },
    /// A Confluent-framed message names a schema id the registry does not know.
    UnknownSchema(u32),
    /// The message is larger than `limits.max_message_bytes`: (size, limit).
    TooLarge(usize, usize),
    /// The normalized event does not fit the internal topic: (bytes, the topic's limit).
    EncodedTooLarge(usize, usize),
    /// More attributes than `limits.max_attributes`: (count, limit).
    TooManyAttributes(usize, usize),
    /// An attribute name or value longer than `limits.max_attribute_bytes`.
    AttributeTooLong {
        /// The attribute's name, cut to 64 bytes.
        name: String,
        len: usize,
        limit: usize,
    },
    /// The message has no value (a tombstone): nothing to decode.
    NullValue,
    /// The message key is not the payload's `lead_key` (dead-lettered only with
    /// `ingest.key_mismatch = "dead_letter"`): (the key, cut to 64 bytes, lossy UTF-8; the
    /// lead key).
    KeyMismatch(String, String),
    /// `occurred_at` beyond `now + limits.max_future` (SPEC §2, v2).
    FutureTime {
        at: i64,
        now: i64,
        limit_ms: i64,
    },
}

impl Invalid {
    pub const CODES: [&'static str; 16] = [
        "undecodable",
        "missing_field",
        "empty_field",
        "wrong_type",
        "negative_time",
        "unknown_source",
        "unknown_crm_type",
        "lead_key_too_long",
        "source_mismatch",
        "unknown_schema",
        "too_large",
        "too_many_attributes",
        "attribute_too_long",
        "null_value",
        "key_mismatch",
        "future_time",
    ];

    /// The static code equal to `s`, if it is one of `CODES`.
    pub fn code_from_str(s: &str) -> Option<&'static str> {
        Self::CODES.into_iter().find(|c| *c == s)
    }

    pub fn code(&self) -> &'static str {
        match self {
            Invalid::Undecodable(_) => "undecodable",
            Invalid::MissingField(_) => "missing_field",
            Invalid::EmptyField(_) => "empty_field",
            Invalid::WrongType { .. } => "wrong_type",
            Invalid::NegativeTime(_) => "negative_time",
            Invalid::UnknownSource(_) => "unknown_source",
            Invalid::UnknownCrmType(_) => "unknown_crm_type",
            Invalid::LeadKeyTooLong(_) => "lead_key_too_long",
            Invalid::SourceMismatch { .. } => "source_mismatch",
            Invalid::UnknownSchema(_) => "unknown_schema",
            Invalid::TooLarge(..) | Invalid::EncodedTooLarge(..) => "too_large",
            Invalid::TooManyAttributes(..) => "too_many_attributes",
            Invalid::AttributeTooLong { .. } => "attribute_too_long",
            Invalid::NullValue => "null_value",
            Invalid::KeyMismatch(..) => "key_mismatch",
            Invalid::FutureTime { .. } => "future_time",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Undecodable(why) => write!(f, "undecodable input: {why}"),
            Invalid::MissingField(name) => write!(f, "missing required field `{name}`"),
            Invalid::EmptyField(name) => write!(f, "required field `{name}` is empty"),
            Invalid::WrongType { field, expected } => {
                // An attribute's name comes from the input: escaped, so that it cannot start
                // a line of its own in a log, and cut, so that a huge one stays short.
                let shown = clip(field, NAME_SHOWN + "attributes.".len());
                let more = if shown.len() < field.len() { "…" } else { "" };
                write!(
                    f,
                    "field `{}{more}` must be {expected}",
                    shown.escape_debug()
                )
            }
            Invalid::NegativeTime(t) => write!(f, "occurred_at must be >= 0, got {t}"),
            Invalid::UnknownSource(s) => {
                write!(f, "unknown source {s:?} (allowed: web, email, crm)")
            }
            Invalid::UnknownCrmType(t) => write!(
                f,
                "unknown crm type {t:?} (allowed: {})",
                CrmType::ALL.map(CrmType::as_str).join(", ")
            ),
            Invalid::LeadKeyTooLong(n) => write!(
                f,
                "lead_key is {n} bytes, longer than the maximum {MAX_LEAD_KEY_BYTES}"
            ),
            Invalid::TooLarge(n, limit) => write!(
                f,
                "message of {n} bytes is larger than limits.max_message_bytes = {limit}"
            ),
            Invalid::EncodedTooLarge(n, limit) => write!(
                f,
                "the event encodes to {n} bytes, more than the internal topic accepts ({limit}: \
                 the smaller of the producer's message.max.bytes and the topic's \
                 max.message.bytes, less framing)"
            ),
            Invalid::TooManyAttributes(n, limit) => write!(
                f,
                "{n} attributes, more than limits.max_attributes = {limit}"
            ),
            Invalid::AttributeTooLong { name, len, limit } => write!(
                f,
                "attribute {name:?} has a name or value of {len} bytes, longer than \
                 limits.max_attribute_bytes = {limit}"
            ),
            Invalid::UnknownSchema(id) => {
                write!(f, "schema id {id} is not in the schema registry")
            }
            Invalid::NullValue => write!(f, "the message has no value (a tombstone)"),
            Invalid::FutureTime { at, now, limit_ms } => write!(
                f,
                "occurred_at {at} is {} ms ahead of now ({now}), more than limits.max_future \
                 ({limit_ms} ms): a producer's clock, or microseconds sent as milliseconds?",
                at - now
            ),
            Invalid::KeyMismatch(key, lead_key) => write!(
                f,
                "the message key {key:?} is not the payload's lead_key {lead_key:?} \
                 (ingest.key_mismatch = \"dead_letter\")"
            ),
            Invalid::SourceMismatch { found, topic } => write!(
                f,
                "source {found:?} does not match the topic's source {topic:?}",
                found = found.as_str(),
                topic = topic.as_str()
            ),
        }
    }
}

impl std::error::Error for Invalid {}

/// Decoded but not yet validated fields, filled by the JSON and Avro decoders. Ids, sources
/// and types are `CompactString`s, as in [`Event`]: inline up to 24 bytes.
#[derive(Clone, Debug, Default)]
pub struct EventFields {
    pub event_id: Option<CompactString>,
    pub lead_key: Option<String>,
    pub occurred_at: Option<i64>,
    pub source: Option<CompactString>,
    pub event_type: Option<CompactString>,
    pub attributes: Vec<(String, String)>,
}

/// Bytes of an input-given name that a reason shows.
const NAME_SHOWN: usize = 64;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut cut = max.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

impl EventFields {
    /// Fields from borrowed parts (generators, tests); still to be validated.
    pub fn from_parts(
        event_id: &str,
        lead_key: &str,
        occurred_at: i64,
        source: &str,
        event_type: &str,
        attributes: &[(&str, &str)],
    ) -> EventFields {
        EventFields {
            event_id: Some(event_id.into()),
            lead_key: Some(lead_key.to_string()),
            occurred_at: Some(occurred_at),
            source: Some(source.into()),
            event_type: Some(event_type.into()),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Applies the rules of SPEC §2. Checks run in field order so the reason is stable.
    pub fn validate(self) -> Result<Event, Invalid> {
        let event_id = required(self.event_id, "event_id")?;
        let lead_key = required(self.lead_key, "lead_key")?;
        // `Event::admit` checks the key as the lead will have it (`input.lead_key` may trim
        // and lowercase it, which can shorten it up to threefold); this bound only keeps
        // hostile keys from being normalized at all.
        if lead_key.len() > RAW_LEAD_KEY_BYTES {
            return Err(Invalid::LeadKeyTooLong(lead_key.len()));
        }
        let occurred_at = self
            .occurred_at
            .ok_or(Invalid::MissingField("occurred_at"))?;
        if occurred_at < 0 {
            return Err(Invalid::NegativeTime(occurred_at));
        }
        let source_text = required(self.source, "source")?;
        let source = Source::parse(&source_text)
            .ok_or_else(|| Invalid::UnknownSource(source_text.to_string()))?;
        let event_type = required(self.event_type, "type")?;
        let crm = match source {
            Source::Crm => Some(
                CrmType::parse(&event_type)
                    .ok_or_else(|| Invalid::UnknownCrmType(event_type.to_string()))?,
            ),
            _ => None,
        };
        let mut attributes = self.attributes;
        dedup_keep_last(&mut attributes);
        Ok(Event {
            event_id,
            lead_key,
            occurred_at,
            source,
            event_type,
            crm,
            attributes,
        })
    }
}

fn required<S: AsRef<str>>(v: Option<S>, name: &'static str) -> Result<S, Invalid> {
    match v {
        None => Err(Invalid::MissingField(name)),
        Some(s) if s.as_ref().is_empty() => Err(Invalid::EmptyField(name)),
        Some(s) => Ok(s),
    }
}

/// Later duplicates of a key win, as with a JSON object or an Avro map. Input order is kept
/// otherwise. Small lists use a pairwise scan; large ones (hostile input) a hash set, so the
/// cost stays linear.
fn dedup_keep_last(attrs: &mut Vec<(String, String)>) {
    if attrs.len() < 2 {
        return;
    }
    if attrs.len() <= 32 {
        let mut i = 0;
        while i < attrs.len() {
            if attrs[i + 1..].iter().any(|(k, _)| *k == attrs[i].0) {
                attrs.remove(i);
            } else {
                i += 1;
            }
        }
        return;
    }
    // Walk from the back: the first time a key is seen there is its last occurrence.
    let mut seen = std::collections::HashSet::with_capacity(attrs.len());
    let mut keep = vec![false; attrs.len()];
    for (i, (k, _)) in attrs.iter().enumerate().rev() {
        keep[i] = seen.insert(k.as_str());
    }
    let mut flags = keep.into_iter();
    attrs.retain(|_| flags.next().unwrap_or(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_given_name_in_a_reason_is_escaped_and_cut() {
        let why = Invalid::WrongType {
            field: "attributes.x\nfake.jsonl: line 999: injected".into(),
            expected: "a string",
        };
        let text = why.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("x\\nfake"), "{text}");
        let huge = Invalid::WrongType {
            field: format!("attributes.{}", "é".repeat(450_000)),
            expected: "a string",
        };
        let text = huge.to_string();
        // 11 bytes of `attributes.`, 64 of the name (32 two-byte characters), the ellipsis.
        assert!(
            text.contains(&format!("`attributes.{}…`", "é".repeat(32))),
            "{text}"
        );
        assert!(text.len() < 120, "{} bytes", text.len());
    }

    fn fields() -> EventFields {
        EventFields {
            event_id: Some("e1".into()),
            lead_key: Some("a@b.c".into()),
            occurred_at: Some(5),
            source: Some("web".into()),
            event_type: Some("page_view".into()),
            attributes: vec![],
        }
    }

    #[test]
    fn valid_event_passes() {
        let e = fields().validate().expect("valid");
        assert_eq!(e.source, Source::Web);
        assert_eq!(e.crm, None);
    }

    #[test]
    fn each_rule_of_spec_2_rejects() {
        let mut f = fields();
        f.event_id = None;
        assert_eq!(f.validate(), Err(Invalid::MissingField("event_id")));
        let mut f = fields();
        f.lead_key = Some(String::new());
        assert_eq!(f.validate(), Err(Invalid::EmptyField("lead_key")));
        let mut f = fields();
        f.lead_key = Some("x".repeat(257));
        let limits = Limits::default();
        assert_eq!(
            f.clone().validate().and_then(|e| e.admit(&limits, None)),
            Err(Invalid::LeadKeyTooLong(257))
        );
        f.lead_key = Some("x".repeat(1025));
        assert_eq!(f.validate(), Err(Invalid::LeadKeyTooLong(1025)), "hostile");
        let mut f = fields();
        f.lead_key = Some("x".repeat(256));
        assert!(f.validate().is_ok());
        let mut f = fields();
        f.occurred_at = Some(-1);
        assert_eq!(f.validate(), Err(Invalid::NegativeTime(-1)));
        let mut f = fields();
        f.occurred_at = Some(0);
        assert!(f.validate().is_ok());
        let mut f = fields();
        f.source = Some("fax".into());
        assert_eq!(f.validate(), Err(Invalid::UnknownSource("fax".into())));
        let mut f = fields();
        f.event_type = None;
        assert_eq!(f.validate(), Err(Invalid::MissingField("type")));
        let mut f = fields();
        f.source = Some("crm".into());
        f.event_type = Some("teleport".into());
        assert_eq!(
            f.validate(),
            Err(Invalid::UnknownCrmType("teleport".into()))
        );
    }

    #[test]
    fn unknown_web_and_email_types_are_accepted() {
        let mut f = fields();
        f.event_type = Some("custom_thing".into());
        assert!(f.validate().is_ok());
        let mut f = fields();
        f.source = Some("email".into());
        f.event_type = Some("forwarded".into());
        assert!(f.validate().is_ok());
    }

    #[test]
    fn every_reason_code_is_listed() {
        let all = [
            Invalid::Undecodable(String::new()),
            Invalid::MissingField("x"),
            Invalid::EmptyField("x"),
            Invalid::WrongType {
                field: String::new(),
                expected: "",
            },
            Invalid::NegativeTime(-1),
            Invalid::UnknownSource(String::new()),
            Invalid::UnknownCrmType(String::new()),
            Invalid::LeadKeyTooLong(0),
            Invalid::SourceMismatch {
                found: Source::Web,
                topic: Source::Crm,
            },
            Invalid::UnknownSchema(7),
            Invalid::TooLarge(2, 1),
            Invalid::TooManyAttributes(2, 1),
            Invalid::AttributeTooLong {
                name: String::new(),
                len: 2,
                limit: 1,
            },
            Invalid::NullValue,
            Invalid::KeyMismatch(String::new(), String::new()),
            Invalid::FutureTime {
                at: 2,
                now: 0,
                limit_ms: 1,
            },
        ];
        for i in &all {
            assert_eq!(Invalid::code_from_str(i.code()), Some(i.code()));
        }
        assert_eq!(all.len(), Invalid::CODES.len());
    }

    #[test]
    fn every_crm_type_round_trips() {
        for c in CrmType::ALL {
            assert_eq!(CrmType::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn many_attributes_dedup_in_linear_time_and_keep_the_last() {
        let mut f = fields();
        // 200k attributes, every key twice: a quadratic dedup would take minutes.
        f.attributes = (0..200_000)
            .map(|i| (format!("k{}", i % 100_000), i.to_string()))
            .collect();
        let ev = f.validate().expect("valid");
        assert_eq!(ev.attributes.len(), 100_000);
        assert_eq!(ev.attribute("k7"), Some("100007"));
        assert_eq!(
            ev.attributes[0].0, "k0",
            "input order of the survivors is kept"
        );
    }

    #[test]
    fn duplicate_attribute_keys_keep_the_last() {
        let mut f = fields();
        f.attributes = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        let e = f.validate().expect("valid");
        assert_eq!(e.attribute("a"), Some("3"));
        assert_eq!(e.attributes.len(), 2);
    }
}
