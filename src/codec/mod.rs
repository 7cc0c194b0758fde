//! Wire formats: JSON (replay files, optional on Kafka) and Avro (Kafka default).

pub mod avro;
pub mod fast;
pub mod json;
pub mod registry;
