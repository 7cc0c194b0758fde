//! Wire formats: JSON (replay files, optional on Kafka) and Avro (Kafka default).

pub mod avro;
pub mod fast;
pub mod json;
pub mod registry;

use crate::model::event::Event;

/// A record of the internal log `leadflow.events` (`schemas/internal_record.avsc`): an event,
/// or a tick (epoch milliseconds: wall-clock time less `clock.grace`, or by the broker's clock
/// when the host's runs ahead; appended by the state stage to a caught-up partition). Here,
/// not in `avro`, so that `fast`, which reads and writes it, does not depend on `avro`, which
/// calls `fast`.
#[derive(Clone, Debug, PartialEq)]
pub enum InternalRecord {
    Event(Event),
    Tick(i64),
}
