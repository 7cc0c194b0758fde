//! The integration tests, in one test binary.
//!
//! Each file used to be a test target of its own, and each linked the whole crate with
//! librdkafka, tokio and the HTTP and object-store clients: 27 binaries of about 50 MB and a
//! link each (a clean CI debug build took 2.6 GB; now 1.4 GB). One binary links once. A module
//! still runs alone by its path: `cargo test --test it kafka_pipeline::` (the real-broker tier
//! names its modules this way in `.ci/run`).
//!
//! `tests/fuzz_regressions.rs` stays a binary of its own: it needs a process-wide setting of
//! apache-avro that the first decode in a process fixes (that file says why).

mod common;

mod avro_fast;
mod config_errors;
mod crash;
mod demo;
mod deploy;
mod engine_spec;
mod explain;
mod faults;
mod history;
mod hostile;
mod interop;
mod kafka_pipeline;
mod layers;
mod limits;
mod notify;
mod object_store;
mod outage;
mod properties;
mod registry;
mod replay_cli;
mod report;
mod report_live;
mod report_properties;
mod sizes;
mod spec_v2;
mod takeover;
mod zombie;
