//! The pure domain: events, scoring, funnel, SLA calendars. No I/O, no async, no clock reads.

pub mod calendar;
pub mod event;
pub mod funnel;
pub mod limits;
pub mod matcher;
pub mod records;
pub mod rules;
pub mod score;
