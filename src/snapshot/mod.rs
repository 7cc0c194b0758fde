//! Snapshots at the edge: where they are stored (`store.rs`, any `object_store` URL), and a
//! snapshot handed to the store while it is encoded (`stream.rs`). The byte
//! format and the copy-on-write snapshot in progress live with the state they encode, in
//! `engine/snapshot.rs` and `engine/checkpoint.rs`: they read the engine's private layout, and
//! the engine stays free of I/O.

mod store;
mod stream;

pub use store::{check_url, Skipped, SnapshotStore, StoreConfig, StoreIo, SCHEMES, SKIP_CODES};
pub use stream::{SnapshotStream, Written};
