//! A snapshot handed to the store while it is encoded ([`SnapshotStream`]), and the counts the
//! encoder and the shutdown wait on ([`Gauge`]). The upload itself is `StoreIo::put_pieces`.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A snapshot written: where, how many bytes, and how many objects of its partition are named
/// above its position (not snapshots of this log: left over or put there; see `prune` in
/// `store.rs`). Here, with the stream that reports it, so the two files import one way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
    pub above: usize,
}

/// Above this size a snapshot is uploaded in parts of this size (S3 allows 10,000 parts of at
/// least 5 MiB, so up to 160 GiB), four at a time (`store.rs`). Here because the stream's
/// look-ahead is counted in parts too.
pub(super) const PART_BYTES: usize = 16 << 20;

/// How far a [`SnapshotStream`] may run ahead of its upload (bytes sent, not yet handed to a
/// part) before [`SnapshotStream::backed_up`] asks the encoder to wait.
pub(super) const STREAM_AHEAD_BYTES: usize = 2 * PART_BYTES;

/// What gets a streamed snapshot's outcome.
pub(super) type Report = Box<dyn FnOnce(anyhow::Result<Written>) + Send>;

/// What a [`SnapshotStream`] hands its writer: the next chunk, or the end (with what gets the
/// outcome).
pub(super) enum Piece {
    Chunk(Vec<u8>),
    End(Option<Report>),
}

/// A count another thread can wait on (bytes waiting for an upload, uploads running). The
/// lock is held only to change or read the number, never across I/O.
#[derive(Debug, Default)]
pub(super) struct Gauge {
    n: Mutex<usize>,
    changed: Condvar,
}

impl Gauge {
    fn lock(&self) -> MutexGuard<'_, usize> {
        // Only numbers are behind the lock: one left by a panic is still right.
        self.n.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn add(&self, k: usize) {
        *self.lock() += k;
    }

    pub(super) fn sub(&self, k: usize) {
        let mut n = self.lock();
        *n = n.saturating_sub(k);
        self.changed.notify_all();
    }

    pub(super) fn get(&self) -> usize {
        *self.lock()
    }

    /// Waits until the count is at most `max`, or the deadline (if any), or `gone()` says
    /// nothing will lower it any more (looked at every 100 ms). Returns the count then.
    pub(super) fn wait_at_most(
        &self,
        max: usize,
        deadline: Option<Instant>,
        gone: impl Fn() -> bool,
    ) -> usize {
        const LOOK: Duration = Duration::from_millis(100);
        let mut n = self.lock();
        while *n > max && !gone() {
            let left = deadline.map_or(LOOK, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                break;
            }
            n = self
                .changed
                .wait_timeout(n, left.min(LOOK))
                .map(|(n, _)| n)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *n
    }
}

/// Lowers a [`Gauge`] by one when dropped: a task counted while it runs, however it ends
/// (finished, abandoned, or dropped with its runtime).
pub(super) struct Running(pub(super) Arc<Gauge>);

impl Running {
    pub(super) fn start(gauge: &Arc<Gauge>) -> Running {
        gauge.add(1);
        Running(Arc::clone(gauge))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

/// A snapshot written while it is encoded (`SnapshotStore::stream`). Dropped before
/// [`SnapshotStream::finish`], the snapshot is abandoned and never becomes visible.
pub struct SnapshotStream {
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<Piece>,
    pub(super) position: i64,
    /// Bytes sent and not yet handed to an upload part (queued, or held below one part).
    pub(super) queued: Arc<Gauge>,
}

impl SnapshotStream {
    /// The log position the snapshot covers (its name in the store).
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Hands over the next chunk of the snapshot, in order. Never waits: a chunk the store
    /// is not ready for waits in the channel; the encoder asks [`Self::backed_up`] before it
    /// makes more.
    pub fn send(&self, chunk: Vec<u8>) {
        self.queued.add(chunk.len());
        // The writer is gone only when the runtime stopped; `finish` reports that.
        let _ = self.tx.send(Piece::Chunk(chunk));
    }

    /// Bytes sent and not yet handed to an upload part.
    pub fn queued_bytes(&self) -> usize {
        self.queued.get()
    }

    /// More than two parts (32 MiB) wait for the upload: the store does not keep up (a slow
    /// or failing remote store), and the encoder should pause so the snapshot is not held
    /// in memory after all. The fold goes on meanwhile; the snapshot just takes longer.
    pub fn backed_up(&self) -> bool {
        self.queued_bytes() > STREAM_AHEAD_BYTES
    }

    /// Blocks until the stream is no longer [`Self::backed_up`] (the upload took parts, or
    /// failed and dropped them), or its writer is gone: for an encoder with nothing else to
    /// do (the final snapshot at a revoke or a shutdown).
    pub fn wait_for_room(&self) {
        // No deadline of its own: the store's requests time out (`SnapshotStore::open`), and
        // a failed upload drops what waits.
        self.queued
            .wait_at_most(STREAM_AHEAD_BYTES, None, || self.tx.is_closed());
    }

    /// Hands over the last chunks; `done` gets `(tag, outcome)` once the snapshot is
    /// complete in the store and pruned, or failed.
    pub fn finish<T: Send + 'static>(
        self,
        last: Vec<Vec<u8>>,
        tag: T,
        done: std::sync::mpsc::Sender<(T, anyhow::Result<Written>)>,
    ) {
        for chunk in last {
            self.send(chunk);
        }
        let report: Report = Box::new(move |r| {
            // The receiver is gone only when the stage ended; nothing to report then.
            let _ = done.send((tag, r));
        });
        if let Err(tokio::sync::mpsc::error::SendError(Piece::End(Some(report)))) =
            self.tx.send(Piece::End(Some(report)))
        {
            report(Err(anyhow::anyhow!(
                "the snapshot store's runtime stopped before the snapshot was written"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(60))
    }

    #[test]
    fn a_wait_ends_when_the_count_comes_down() {
        let gauge = Arc::new(Gauge::default());
        gauge.add(5);
        let other = Arc::clone(&gauge);
        let waiter = std::thread::spawn(move || other.wait_at_most(2, soon(), || false));
        gauge.sub(1);
        gauge.sub(2);
        assert_eq!(
            waiter.join().expect("waiter"),
            2,
            "woken at 2, not at the deadline"
        );
    }

    #[test]
    fn a_wait_ends_at_its_deadline_or_when_nothing_will_lower_the_count() {
        let gauge = Gauge::default();
        gauge.add(3);
        assert_eq!(gauge.wait_at_most(0, Some(Instant::now()), || false), 3);
        assert_eq!(gauge.wait_at_most(0, None, || true), 3);
        // Lowered below zero by a late report: stays at zero.
        gauge.sub(7);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn a_task_is_counted_until_it_is_dropped() {
        let gauge = Arc::new(Gauge::default());
        let a = Running::start(&gauge);
        let b = Running::start(&gauge);
        assert_eq!(gauge.get(), 2);
        drop(a);
        drop(b);
        assert_eq!(gauge.wait_at_most(0, soon(), || false), 0);
    }

    /// The final snapshot's encoder waits while the upload is behind, and goes on when a
    /// part is taken, or at once when the writer is gone.
    #[test]
    fn an_encoder_waits_for_room_until_a_part_is_taken() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = SnapshotStream {
            tx,
            position: 1,
            queued: Arc::default(),
        };
        for _ in 0..3 {
            stream.send(vec![0; PART_BYTES]);
        }
        assert!(stream.backed_up());
        let queued = Arc::clone(&stream.queued);
        let upload = std::thread::spawn(move || queued.sub(PART_BYTES));
        stream.wait_for_room();
        assert!(!stream.backed_up(), "{} bytes wait", stream.queued_bytes());
        upload.join().expect("upload");
        stream.send(vec![0; PART_BYTES]);
        assert!(stream.backed_up());
        drop(rx);
        stream.wait_for_room(); // the writer is gone: returns, nothing will come down
        assert!(stream.backed_up());
    }
}
