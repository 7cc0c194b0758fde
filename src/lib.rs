//! leadflow: lead scoring, funnel stages and SLA clocks over event streams.
//!
//! `model` and `engine` are pure and deterministic; `config`, `codec` and `replay` are the
//! adapters that feed them.

pub mod allocator;
pub mod analytics;
pub mod codec;
pub mod config;
pub mod demo;
pub mod engine;
pub mod fuzzing;
pub mod gen;
pub mod health;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod partition;
pub mod replay;
pub mod service;
pub mod snapshot;
