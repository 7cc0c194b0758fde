//! Notifications: handoff alerts delivered to people. A stage of its own (its own consumer
//! group on the output topics) routes transition and SLA records to Slack incoming webhooks
//! and JSON webhooks, at least once, in order per lead (docs/notifications.md).
//!
//! - `config` (`src/config/notify.rs`, beside the other sections): `[notify]`, targets, routes,
//!   owner routing; secrets from env or files;
//! - `route.rs`: pure: which targets a record goes to, and the message each gets;
//! - `sign.rs`: the HMAC-SHA256 signature of webhook bodies;
//! - `deliver.rs`: HTTP delivery with retries, backoff, rate limits;
//! - `stage.rs`: the Kafka consumer, offsets committed after delivery, the dead-letter topic.

pub use crate::config::notify as config;
mod deliver;
pub mod route;
pub mod sign;
mod stage;

pub use config::NotifyConfig;
pub use stage::run;
