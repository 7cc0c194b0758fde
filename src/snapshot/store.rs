//! The snapshot store: one folder (prefix) per internal topic partition, objects named by the
//! log position they cover, kept to the newest `retain`. Any store `object_store` reaches by
//! URL: `file://` (the default; files are fsynced, and written to a staging name then renamed),
//! `s3://` (and S3-compatible servers through `snapshots.endpoint`), `gs://`, `az://`.
//!
//! A snapshot is visible only once complete: an S3, GCS or Azure object (single or multipart)
//! appears atomically when its upload completes, and a local file is renamed into place after
//! it is written and synced. So no manifest is needed; a reader lists the names, and the
//! snapshot's own checksum catches anything else (docs/snapshots.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};

use super::stream::{Gauge, Piece, Report, Running, SnapshotStream, Written, PART_BYTES};
use crate::engine::PartitionState;
use crate::model::rules::Ruleset;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".lfsn";
const PARTS_IN_FLIGHT: usize = 4;
/// Leads encoded between two looks at the upload by [`SnapshotStore::write_state`]: about a
/// chunk (1 MiB) at the example config's size per lead.
const FINAL_STEP_LEADS: usize = 4096;
/// URL schemes accepted for `snapshots.url` (the ones `object_store` lists and leadflow tests:
/// file and s3; gs and az go through the same code).
pub const SCHEMES: [&str; 9] = [
    "file", "s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss",
];

/// Where snapshots go: `snapshots.url`, with `snapshots.endpoint` for S3-compatible servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: String,
    pub endpoint: Option<String>,
    pub retain: u32,
}

/// The store and the runtime that runs its I/O.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    io: StoreIo,
    /// Runs the store's I/O; the state thread never waits on it except at recovery and at a
    /// final (revoke or shutdown) snapshot. Background writes hold only the [`StoreIo`]: the
    /// runtime is dropped by its owner, never by one of its own tasks (tokio forbids that).
    rt: Arc<tokio::runtime::Runtime>,
    /// Streamed uploads still running (finishing, or aborting after they were abandoned).
    uploads: Arc<Gauge>,
}

/// What a write or a read needs: the store, where in it, how many snapshots to keep.
#[derive(Clone, Debug)]
pub struct StoreIo {
    store: Arc<dyn ObjectStore>,
    /// The prefix inside the store (the URL's path).
    root: Path,
    url: String,
    /// The folder, for a `file://` store: staging files a crash left are removed from it.
    local: Option<PathBuf>,
    retain: usize,
}

impl std::ops::Deref for SnapshotStore {
    type Target = StoreIo;
    fn deref(&self) -> &StoreIo {
        &self.io
    }
}

/// A snapshot that could not be used, and why (reported, then the previous one is tried).
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The object's location in the store.
    pub path: String,
    /// Bounded, for the metric label: `not_a_snapshot`, `unsupported_version`, `corrupt`,
    /// `unreadable`.
    pub code: &'static str,
    pub reason: String,
}

/// The snapshot reasons [`Skipped::code`] takes.
pub const SKIP_CODES: [&str; 4] = [
    "not_a_snapshot",
    "unsupported_version",
    "corrupt",
    "unreadable",
];

/// What recovery finds: the newest snapshot that decodes (state and position), and the newer
/// ones it passed over.
pub type Loaded = (Option<(PartitionState, i64)>, Vec<Skipped>);

/// A store error as one readable line: what was being done, the store's message once (its
/// `Display` already holds its causes; the error chain would repeat them, response bodies
/// included), and a hint for the usual causes.
fn store_error(e: object_store::Error, what: String) -> anyhow::Error {
    let text = e.to_string();
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    const MAX: usize = 600;
    if line.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    let hint = if text.contains("169.254.169.254") || text.contains("credential") {
        " (no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a web \
         identity such as EKS IRSA, or an instance role)"
    } else if text.contains("NoSuchBucket") {
        " (the bucket does not exist, or these credentials cannot see it)"
    } else if text.contains("AccessDenied") || text.contains("403 Forbidden") {
        " (access denied: the role needs the actions in deploy/k8s/iam-policy.json)"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: {line}{hint}")
}

/// Checks a `snapshots.url` (and endpoint) without touching the store: the scheme is one of
/// [`SCHEMES`], a file URL is a local absolute path, the endpoint is for S3 only.
///
/// Errors: the reason, for a config error naming the key.
pub fn check_url(url: &str, endpoint: Option<&str>) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| {
        format!(
            "not a URL ({e}); a local folder is file:///ABSOLUTE/PATH (or set snapshots.dir), \
             a bucket s3://BUCKET/PREFIX"
        )
    })?;
    let scheme = parsed.scheme();
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("no query (?…) or fragment (#…) belongs in a snapshot store URL".into());
    }
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "the scheme {scheme}:// is not a snapshot store; allowed: {}",
            SCHEMES.map(|s| format!("{s}://")).join(", ")
        ));
    }
    if scheme == "file" && parsed.to_file_path().is_err() {
        return Err(
            "a file URL needs an absolute local path, e.g. file:///var/lib/leadflow".into(),
        );
    }
    if scheme != "file" && parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "no bucket or container: write {scheme}://BUCKET/PREFIX"
        ));
    }
    if matches!(scheme, "s3" | "s3a") {
        let bucket = parsed.host_str().unwrap_or("");
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!(
                "{bucket:?} is not a valid S3 bucket name: 3 to 63 lowercase letters, digits, \
                 dots and hyphens, starting and ending with a letter or digit"
            ));
        }
    }
    if endpoint.is_some() && !matches!(scheme, "s3" | "s3a") {
        return Err(format!(
            "snapshots.endpoint is for S3-compatible stores (s3://), not {scheme}://"
        ));
    }
    Ok(())
}

impl SnapshotStore {
    /// Opens the store (no I/O yet): credentials and region from the standard environment
    /// (AWS_*, GOOGLE_*, AZURE_* variables, instance metadata).
    ///
    /// Errors: an invalid URL, or a store the library cannot configure from it.
    pub fn open(cfg: &StoreConfig) -> anyhow::Result<SnapshotStore> {
        check_url(&cfg.url, cfg.endpoint.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let url = url::Url::parse(&cfg.url).context("parsing snapshots.url")?;
        let (_, root) = object_store::ObjectStoreScheme::parse(&url)
            .with_context(|| format!("snapshots.url {}", cfg.url))?;
        // Retries inside one upload are short; a failed upload is retried by the next
        // checkpoint (with backoff), so a long outage never holds a snapshot's memory.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        let mut local = None;
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("{} is not a local path", cfg.url))?;
                local = Some(dir);
                Arc::new(object_store::local::LocalFileSystem::new().with_fsync(true))
            }
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_retry(retry)
                    .with_client_options(client);
                if let Some(ep) = &cfg.endpoint {
                    // S3-compatible servers (MinIO, Ceph) are addressed by path, often on
                    // plain HTTP inside a cluster.
                    b = b
                        .with_endpoint(ep.as_str())
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(ep.starts_with("http://"));
                }
                Arc::new(b.build().context("configuring the S3 snapshot store")?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .context("configuring the GCS snapshot store")?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(cfg.url.as_str())
                    .with_retry(retry)
                    .with_client_options(client)
                    .build()
                    .context("configuring the Azure snapshot store")?,
            ),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("snapshot-io")
            .enable_all()
            .build()
            .context("starting the snapshot I/O runtime")?;
        Ok(SnapshotStore {
            io: StoreIo {
                store,
                root,
                url: cfg.url.trim_end_matches('/').to_string(),
                local,
                retain: cfg.retain.max(1) as usize,
            },
            rt: Arc::new(rt),
            uploads: Arc::default(),
        })
    }
}

impl StoreIo {
    /// The store's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn partition_prefix(&self, topic: &str, partition: i32) -> Path {
        self.root.clone().join(format!("{topic}-{partition}"))
    }

    /// Where the snapshot of `topic`/`partition` at `position` goes (as the store names it).
    pub fn location(&self, topic: &str, partition: i32, position: i64) -> String {
        self.name(topic, partition, position).to_string()
    }

    fn name(&self, topic: &str, partition: i32, position: i64) -> Path {
        self.partition_prefix(topic, partition)
            .join(format!("{PREFIX}{position:020}{SUFFIX}"))
    }

    /// Writes a snapshot given as chunks in order (one PUT up to 16 MiB, else a multipart
    /// upload in 16 MiB parts, four in flight, without copying the chunks), then prunes to the
    /// newest `retain`.
    ///
    /// Errors: the store's, with the location (a failed multipart upload is aborted).
    pub async fn put(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        chunks: Vec<Vec<u8>>,
    ) -> anyhow::Result<Written> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for chunk in chunks {
            let _ = tx.send(Piece::Chunk(chunk));
        }
        let _ = tx.send(Piece::End(None));
        drop(tx);
        let queued = Gauge::default();
        match self
            .put_pieces(topic, partition, position, rx, &queued)
            .await
        {
            Some((result, _)) => result,
            None => Err(anyhow::anyhow!(
                "the snapshot's chunks ended without their end"
            )),
        }
    }

    /// [`StoreIo::put`] of chunks as they arrive, until [`Piece::End`]. What is held at once
    /// is at most one part being filled plus the parts in flight, not the whole snapshot.
    /// Returns the outcome with the end's report, or `None` when the sender went away before
    /// the end: the snapshot was abandoned, and nothing of it becomes visible (a multipart
    /// upload is aborted; a local staging file is removed by the abort, or by
    /// [`StoreIo::remove_leftovers`] after a crash).
    async fn put_pieces(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Piece>,
        queued: &Gauge,
    ) -> Option<(anyhow::Result<Written>, Option<Report>)> {
        // Every byte leaves `queued` once: handed to a part, or dropped after a failure.
        let left = |n: usize| queued.sub(n);
        let path = self.name(topic, partition, position);
        let located = || format!("writing {}/{path}", self.scheme_host());
        // Chunks wait here until they pass one part's size: a smaller snapshot is one PUT.
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut size = 0usize;
        let mut upload: Option<WriteMultipart> = None;
        // The first error; later chunks are dropped, and the end reports it.
        let mut failed: Option<anyhow::Error> = None;
        let report = loop {
            let Some(piece) = rx.recv().await else {
                if let Some(w) = upload {
                    // Parts of an unfinished upload are invisible but kept (and billed)
                    // until aborted.
                    let _ = w.abort().await;
                }
                return None;
            };
            let chunk = match piece {
                Piece::End(report) => break report,
                Piece::Chunk(chunk) => chunk,
            };
            if failed.is_some() {
                left(chunk.len());
                continue;
            }
            size += chunk.len();
            held.push(chunk);
            if upload.is_none() {
                if size <= PART_BYTES {
                    continue;
                }
                match self.store.put_multipart(&path).await {
                    Ok(u) => upload = Some(WriteMultipart::new_with_chunk_size(u, PART_BYTES)),
                    Err(e) => {
                        failed = Some(store_error(e, located()));
                        left(held.iter().map(Vec::len).sum());
                        held = Vec::new();
                        continue;
                    }
                }
            }
            if let Some(w) = upload.as_mut() {
                for chunk in held.drain(..) {
                    let n = chunk.len();
                    if failed.is_none() {
                        match w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                            Ok(()) => w.put(Bytes::from(chunk)),
                            Err(e) => failed = Some(store_error(e, located())),
                        }
                    }
                    left(n);
                }
            }
            if failed.is_some() {
                if let Some(w) = upload.take() {
                    let _ = w.abort().await;
                }
            }
        };
        let stored = match (failed, upload) {
            (Some(e), _) => Err(e),
            (None, Some(w)) => match w.finish().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    // A local multipart upload whose completion failed keeps its staging
                    // file (the snapshot's size) until recovery's cleanup: remove it now.
                    self.remove_staged(topic, partition, position).await;
                    Err(store_error(e, located()))
                }
            },
            (None, None) => {
                let payload: object_store::PutPayload = held.into_iter().map(Bytes::from).collect();
                self.store
                    .put(&path, payload)
                    .await
                    .map(drop)
                    .map_err(|e| store_error(e, located()))
            }
        };
        let result = match stored {
            Ok(()) => self
                .prune(topic, partition, position)
                .await
                .map(|above| Written {
                    path: format!("{}/{path}", self.scheme_host()),
                    bytes: size as u64,
                    above,
                }),
            Err(e) => Err(e),
        };
        Some((result, report))
    }

    /// `s3://bucket`, `file://`: the part of the URL a store path is relative to.
    fn scheme_host(&self) -> String {
        match url::Url::parse(&self.url) {
            // Paths of the local store are absolute without their leading slash.
            Ok(u) if u.scheme() == "file" => "file://".to_string(),
            Ok(u) => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")),
            Err(_) => self.url.clone(),
        }
    }

    /// Removes the staging files of the snapshot at `position` in a local store (nothing for
    /// object stores, where an unfinished upload is not an object).
    async fn remove_staged(&self, topic: &str, partition: i32, position: i64) {
        let Some(dir) = &self.local else {
            return;
        };
        let name = format!("{PREFIX}{position:020}{SUFFIX}#");
        let dir = dir.join(format!("{topic}-{partition}"));
        // Off the runtime's one worker thread: file system calls block.
        let _ = tokio::task::spawn_blocking(move || {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        })
        .await;
    }

    /// Removes the staging files a crash left in a local partition folder (a write is
    /// complete only once renamed); returns how many. Object stores need nothing: an upload
    /// that never completed is not an object.
    pub fn remove_leftovers(&self, topic: &str, partition: i32) -> usize {
        let Some(dir) = &self.local else {
            return 0;
        };
        let dir = dir.join(format!("{topic}-{partition}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // `object_store` stages as `NAME#N`; earlier builds as `.NAME.tmp`.
            let staged = name.starts_with(PREFIX) && name.contains('#');
            let old = name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp");
            if (staged || old) && std::fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    async fn list_async(&self, topic: &str, partition: i32) -> anyhow::Result<Vec<(i64, Path)>> {
        let prefix = self.partition_prefix(topic, partition);
        let metas: Vec<object_store::ObjectMeta> =
            match self.store.list(Some(&prefix)).try_collect().await {
                Ok(m) => m,
                // A local folder that does not exist yet holds no snapshot.
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(e) => {
                    return Err(store_error(
                        e,
                        format!("listing the snapshots in {}/{prefix}", self.scheme_host()),
                    ))
                }
            };
        let mut out: Vec<(i64, Path)> = metas
            .into_iter()
            .filter_map(|m| {
                let pos = m
                    .location
                    .filename()?
                    .strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()?;
                Some((pos, m.location))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(out)
    }

    /// Keeps the newest `retain` snapshots at or below `position` (the one just written);
    /// returns how many objects are named above it. Those are never deleted, and never count
    /// towards the kept: a leftover of a recreated topic or an object put there by hand would
    /// otherwise push every new snapshot out as soon as it is written. Recovery passes over
    /// them if they do not decode.
    async fn prune(&self, topic: &str, partition: i32, position: i64) -> anyhow::Result<usize> {
        let (above, kept): (Vec<_>, Vec<_>) = self
            .list_async(topic, partition)
            .await?
            .into_iter()
            .partition(|(p, _)| *p > position);
        for (_, old) in kept.into_iter().skip(self.retain) {
            match self.store.delete(&old).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("removing {old}")));
                }
            }
        }
        Ok(above.len())
    }
}

impl SnapshotStore {
    /// [`SnapshotStore::put`] of one buffer, waiting for it (recovery, tests and tools).
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Written> {
        self.write_chunks(topic, partition, position, vec![bytes])
    }

    /// [`SnapshotStore::put`] of chunks already encoded, waiting for it (tests and tools; the
    /// final snapshot at a revoke or shutdown is streamed by [`SnapshotStore::write_state`]).
    pub fn write_chunks(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        chunks: Vec<Vec<u8>>,
    ) -> anyhow::Result<Written> {
        self.rt
            .block_on(self.put(topic, partition, position, chunks))
    }

    /// Encodes the snapshot of `state` at `position` and writes it, waiting for it (the final
    /// snapshot at a revoke or a shutdown). The chunks are streamed as they fill, and the
    /// encoder waits while the upload is behind, so this holds about what a streamed
    /// checkpoint holds (a few 16 MiB parts), not the whole snapshot. Replaces a snapshot in
    /// progress.
    ///
    /// Errors: the store's, with the location; nothing becomes visible then.
    pub fn write_state(
        &self,
        topic: &str,
        partition: i32,
        state: &mut PartitionState,
        position: i64,
    ) -> anyhow::Result<Written> {
        state.begin_snapshot(position);
        let stream = self.stream(topic, partition, position);
        let (tx, rx) = std::sync::mpsc::channel();
        loop {
            if let Some((_, last)) = state.snapshot_step(FINAL_STEP_LEADS) {
                stream.finish(last, (), tx);
                break;
            }
            for chunk in state.take_snapshot_chunks() {
                stream.send(chunk);
            }
            stream.wait_for_room();
        }
        match rx.recv() {
            Ok(((), written)) => written,
            // `finish` reports every end; this is a writer dropped with its runtime.
            Err(_) => Err(anyhow::anyhow!(
                "the snapshot store's runtime stopped before the snapshot was written"
            )),
        }
    }

    /// Waits until every streamed upload has ended (written, failed, or aborted after it was
    /// abandoned), or `deadline`. Returns how many still run: an abort cut short by the
    /// process's exit leaves its parts to the bucket's lifecycle rule (docs/snapshots.md).
    pub fn wait_for_uploads(&self, deadline: std::time::Instant) -> usize {
        self.uploads.wait_at_most(0, Some(deadline), || false)
    }

    /// Starts writing the snapshot of `partition` at `position` while it is encoded: each
    /// chunk given to [`SnapshotStream::send`] goes to the store's runtime at once, and is
    /// uploaded as soon as a part (16 MiB) is full, so a checkpoint holds about one part and
    /// the parts in flight, not the whole snapshot (hundreds of MB at a million leads). The
    /// snapshot is visible only after [`SnapshotStream::finish`] and the store's completion,
    /// as with [`StoreIo::put`].
    pub fn stream(&self, topic: &str, partition: i32, position: i64) -> SnapshotStream {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let me = self.io.clone();
        let topic = topic.to_string();
        let queued = Arc::new(Gauge::default());
        let counted = Arc::clone(&queued);
        let running = Running::start(&self.uploads);
        self.rt.spawn(async move {
            let _running = running;
            if let Some((result, Some(report))) = me
                .put_pieces(&topic, partition, position, rx, &counted)
                .await
            {
                report(result);
            }
        });
        SnapshotStream {
            tx,
            position,
            queued,
        }
    }

    /// Starts [`SnapshotStore::put`] in the background; `done` gets the outcome.
    pub fn spawn_write<T: Send + 'static>(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        chunks: Vec<Vec<u8>>,
        tag: T,
        done: std::sync::mpsc::Sender<(T, anyhow::Result<Written>)>,
    ) {
        self.stream(topic, partition, position)
            .finish(chunks, tag, done);
    }

    /// The snapshots of a partition, newest (highest position) first.
    ///
    /// Errors: the store cannot be listed.
    pub fn list(&self, topic: &str, partition: i32) -> anyhow::Result<Vec<(i64, String)>> {
        let found = self.rt.block_on(self.list_async(topic, partition))?;
        Ok(found.into_iter().map(|(p, l)| (p, l.to_string())).collect())
    }

    /// The newest snapshot that decodes, with its position, and the newer ones that did not.
    ///
    /// Errors: the store cannot be listed. Then leadflow does not guess: folding from the
    /// beginning would be slow at best and, with a bounded log, incomplete.
    pub fn load_newest(
        &self,
        topic: &str,
        partition: i32,
        rules: &Arc<Ruleset>,
    ) -> anyhow::Result<Loaded> {
        self.rt.block_on(async {
            let mut skipped = Vec::new();
            for (_, path) in self.list_async(topic, partition).await? {
                let read = match self.store.get(&path).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                };
                let decoded = read
                    .map_err(|e| ("unreadable", format!("cannot read it: {e}")))
                    .and_then(|b| {
                        PartitionState::decode_snapshot(Arc::clone(rules), &b)
                            .map_err(|e| (e.code(), e.to_string()))
                    });
                match decoded {
                    Ok(found) => return Ok((Some(found), skipped)),
                    Err((code, reason)) => skipped.push(Skipped {
                        path: format!("{}/{path}", self.scheme_host()),
                        code,
                        reason,
                    }),
                }
            }
            Ok((None, skipped))
        })
    }

    /// Puts raw bytes at a snapshot's name (tests and tools: e.g. a corrupt object).
    pub fn put_raw(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        bytes: Vec<u8>,
    ) -> anyhow::Result<()> {
        let path = self.name(topic, partition, position);
        self.rt
            .block_on(self.store.put(&path, Bytes::from(bytes).into()))
            .with_context(|| format!("writing {path}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn rules() -> Arc<Ruleset> {
        Settings::from_toml(include_str!("../../examples/config.toml"))
            .expect("example config")
            .rules
    }

    fn local(dir: &std::path::Path, retain: u32) -> SnapshotStore {
        SnapshotStore::open(&StoreConfig {
            url: format!("file://{}", dir.display()),
            endpoint: None,
            retain,
        })
        .expect("open")
    }

    fn positions(store: &SnapshotStore, p: i32) -> Vec<i64> {
        store
            .list("t", p)
            .expect("list")
            .iter()
            .map(|(p, _)| *p)
            .collect()
    }

    #[test]
    fn writes_prunes_and_loads_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 2);
        let st = PartitionState::new(rules());
        for pos in [5, 17, 9] {
            store
                .write("t", 0, pos, st.encode_snapshot(pos))
                .expect("write");
        }
        assert_eq!(
            positions(&store, 0),
            vec![17, 9, 5],
            "a write keeps the newest two at or below its position, and never removes one above"
        );
        store
            .write("t", 0, 20, st.encode_snapshot(20))
            .expect("write");
        assert_eq!(
            positions(&store, 0),
            vec![20, 17],
            "the newest two by position"
        );
        assert!(dir
            .path()
            .join("t-0/snapshot-00000000000000000017.lfsn")
            .is_file());
        let (found, skipped) = store.load_newest("t", 0, &rules()).expect("load");
        assert_eq!(found.map(|(_, p)| p), Some(20));
        assert!(skipped.is_empty());
        assert!(store.list("t", 1).expect("list").is_empty());
    }

    /// Objects named above the position being written (junk, or left from a recreated topic)
    /// neither push the new snapshots out nor are deleted; they are reported.
    #[test]
    fn objects_above_the_current_position_do_not_push_snapshots_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 2);
        for pos in [900_000_000, 900_000_001, 900_000_002] {
            store
                .put_raw("t", 1, pos, b"not a snapshot".to_vec())
                .expect("junk");
        }
        let st = PartitionState::new(rules());
        let mut last = None;
        for pos in [10, 20, 30] {
            last = Some(
                store
                    .write("t", 1, pos, st.encode_snapshot(pos))
                    .expect("write"),
            );
        }
        assert_eq!(last.map(|w| w.above), Some(3));
        assert_eq!(
            positions(&store, 1),
            vec![900_000_002, 900_000_001, 900_000_000, 30, 20],
            "the newest two real ones kept, the others left alone"
        );
        let (found, skipped) = store.load_newest("t", 1, &rules()).expect("load");
        assert_eq!(found.map(|(_, p)| p), Some(30));
        assert_eq!(skipped.len(), 3);
    }

    #[test]
    fn a_large_snapshot_goes_in_parts_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        // 2.5 parts of arbitrary bytes: the store does not look inside.
        let bytes: Vec<u8> = (0..PART_BYTES * 5 / 2)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        // In uneven chunks, as the encoder hands them over.
        let chunks: Vec<Vec<u8>> = bytes.chunks(3_000_001).map(<[u8]>::to_vec).collect();
        let w = store.write_chunks("t", 4, 99, chunks).expect("write");
        assert_eq!(w.bytes, bytes.len() as u64);
        let on_disk =
            std::fs::read(dir.path().join("t-4/snapshot-00000000000000000099.lfsn")).expect("read");
        assert!(on_disk == bytes, "the parts join into the same bytes");
    }

    /// The staging files (`NAME#N`) in `dir` and their sizes.
    fn staged(dir: &std::path::Path) -> Vec<u64> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().contains('#'))
                    .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (up to 60 s) until `ok` holds; false if it never did.
    fn wait_for(mut ok: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        ok()
    }

    /// 2.5 parts of arbitrary bytes (the store does not look inside), in uneven chunks as the
    /// encoder hands them over.
    fn two_and_a_half_parts() -> (Vec<u8>, Vec<Vec<u8>>) {
        let bytes: Vec<u8> = (0..PART_BYTES * 5 / 2)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let chunks = bytes.chunks(3_000_001).map(<[u8]>::to_vec).collect();
        (bytes, chunks)
    }

    /// Sends chunks until more than one part went, then waits for a full part in the staging
    /// file: written before the snapshot's end, not held for it.
    fn stream_past_one_part(
        store: &SnapshotStore,
        dir: &std::path::Path,
        chunks: &mut std::vec::IntoIter<Vec<u8>>,
    ) -> SnapshotStream {
        let stream = store.stream("t", 4, 99);
        let mut sent = 0;
        while sent <= PART_BYTES {
            let chunk = chunks.next().expect("more than a part");
            sent += chunk.len();
            stream.send(chunk);
        }
        let part = dir.join("t-4");
        assert!(
            wait_for(|| staged(&part).iter().any(|&n| n >= PART_BYTES as u64)),
            "a full part reached the staging file before the end: {:?}",
            staged(&part)
        );
        stream
    }

    #[test]
    fn a_streamed_snapshot_is_written_as_it_comes_and_visible_only_at_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        let (bytes, chunks) = two_and_a_half_parts();
        let mut chunks = chunks.into_iter();
        let stream = stream_past_one_part(&store, dir.path(), &mut chunks);
        assert_eq!(positions(&store, 4), Vec::<i64>::new(), "not visible yet");

        let (tx, rx) = std::sync::mpsc::channel();
        stream.finish(chunks.collect(), "tag", tx);
        let (tag, written) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the outcome is reported");
        assert_eq!(tag, "tag");
        let w = written.expect("written");
        assert_eq!(w.bytes, bytes.len() as u64);
        assert_eq!(positions(&store, 4), vec![99]);
        let on_disk =
            std::fs::read(dir.path().join("t-4/snapshot-00000000000000000099.lfsn")).expect("read");
        assert!(
            on_disk == bytes,
            "the streamed parts join into the same bytes"
        );
        assert!(staged(&dir.path().join("t-4")).is_empty());
    }

    #[test]
    fn a_stream_counts_what_waits_for_the_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        let (_, chunks) = two_and_a_half_parts();
        let mut chunks = chunks.into_iter();
        let stream = store.stream("t", 4, 99);
        // Below one part the store holds what it got: all of it still waits.
        let first = chunks.next().expect("a chunk");
        let n = first.len();
        stream.send(first);
        assert_eq!(stream.queued_bytes(), n);
        assert!(!stream.backed_up());
        // Past one part the upload starts and takes everything sent.
        for chunk in chunks.by_ref().take(6) {
            stream.send(chunk);
        }
        assert!(
            wait_for(|| stream.queued_bytes() == 0),
            "handed to the upload: {} bytes still wait",
            stream.queued_bytes()
        );
        drop(stream);
    }

    /// An abandoned stream's upload is aborted, and the shutdown's wait for uploads ends only
    /// once the abort has (no polling needed).
    #[test]
    fn an_abandoned_stream_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        let (_, chunks) = two_and_a_half_parts();
        let mut chunks = chunks.into_iter();
        let stream = stream_past_one_part(&store, dir.path(), &mut chunks);
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(store.wait_for_uploads(deadline), 0, "the abort ended");
        let staging = staged(&dir.path().join("t-4"));
        assert!(
            staging.is_empty(),
            "aborted when the wait returned: {staging:?}"
        );
        assert_eq!(positions(&store, 4), Vec::<i64>::new());
    }

    /// A state whose snapshot is more than one upload part (generated traffic, about 150k
    /// leads), so the final write goes through the multipart upload.
    fn state_past_one_part() -> PartitionState {
        let events = crate::gen::generate(&crate::gen::GenSpec {
            seed: 11,
            events: 300_000,
            leads: 150_000,
            start_ms: 1_767_225_600_000,
            span_ms: 30 * 86_400_000,
        });
        let mut st = PartitionState::new(rules());
        let mut out = Vec::new();
        for ev in &events {
            st.apply(ev, &mut out);
            out.clear();
        }
        st
    }

    /// The final snapshot (revoke, shutdown) is streamed as it is encoded and waited for: it
    /// reads back as the whole encode, and a failing one leaves nothing, reported.
    #[test]
    fn a_final_snapshot_is_streamed_and_waited_for() {
        let (dir, store, part) = blocked_at_5();
        let mut st = state_past_one_part();
        let expected = st.encode_snapshot(9);
        assert!(expected.len() > PART_BYTES, "{} bytes", expected.len());

        let w = store.write_state("t", 0, &mut st, 9).expect("written");
        assert_eq!(w.bytes, expected.len() as u64);
        assert_eq!(st.snapshot_in_progress(), None);
        let on_disk = std::fs::read(part.join("snapshot-00000000000000000009.lfsn")).expect("read");
        assert!(
            on_disk == expected,
            "the streamed snapshot is the whole encode"
        );
        assert_eq!(positions(&store, 0), vec![9]);

        // Position 5's name is taken: the upload's completion fails.
        let err = store
            .write_state("t", 0, &mut st, 5)
            .expect_err("the rename fails");
        assert!(format!("{err:#}").contains("writing"), "{err:#}");
        assert_eq!(st.snapshot_in_progress(), None);
        assert_eq!(positions(&store, 0), vec![9]);
        assert!(staged(&part).is_empty(), "{:?}", staged(&part));
        // The upload's task ends just after it reported.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(store.wait_for_uploads(deadline), 0);
        drop(dir);
    }

    /// A local store whose partition 0 of topic `t` cannot take a snapshot at position 5:
    /// the name is taken by a folder, so the final rename fails after the data was written.
    fn blocked_at_5() -> (tempfile::TempDir, SnapshotStore, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        let part = dir.path().join("t-0");
        std::fs::create_dir_all(&part).expect("mkdir");
        std::fs::create_dir(part.join("snapshot-00000000000000000005.lfsn")).expect("mkdir");
        (dir, store, part)
    }

    #[test]
    fn a_streamed_snapshot_that_fails_reports_it_at_the_end() {
        let (_dir, store, part) = blocked_at_5();
        let (_, chunks) = two_and_a_half_parts();
        let stream = store.stream("t", 0, 5);
        let (tx, rx) = std::sync::mpsc::channel();
        stream.finish(chunks, 7u32, tx);
        let (tag, written) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the outcome is reported");
        assert_eq!(tag, 7);
        let err = written.expect_err("the rename fails");
        assert!(format!("{err:#}").contains("writing"), "{err:#}");
        assert!(staged(&part).is_empty(), "{:?}", staged(&part));
    }

    /// A local store (keeping 3) with one snapshot of an empty state at position 10 of
    /// partition `p` of topic `t`.
    fn one_snapshot_at_10(p: i32) -> (tempfile::TempDir, SnapshotStore, PartitionState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = local(dir.path(), 3);
        let st = PartitionState::new(rules());
        store
            .write("t", p, 10, st.encode_snapshot(10))
            .expect("write");
        (dir, store, st)
    }

    #[test]
    fn a_corrupt_newest_snapshot_is_reported_and_the_previous_used() {
        let (dir, store, st) = one_snapshot_at_10(3);
        let mut bytes = st.encode_snapshot(20);
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        store.put_raw("t", 3, 20, bytes).expect("corrupt");
        let (found, skipped) = store.load_newest("t", 3, &rules()).expect("load");
        assert_eq!(found.map(|(_, p)| p), Some(10));
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].reason.contains("checksum"),
            "{}",
            skipped[0].reason
        );
        assert_eq!(skipped[0].code, "corrupt");
        assert_eq!(
            skipped[0].path,
            format!(
                "file://{}/t-3/snapshot-00000000000000000020.lfsn",
                dir.path().display()
            )
        );
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_says_so() {
        let (dir, store, _) = one_snapshot_at_10(0);
        // What an operator may leave there: notes, a copy of another file.
        std::fs::write(
            dir.path().join("t-0/snapshot-00000000000000000020.lfsn"),
            b"Vacation notes\n",
        )
        .expect("write");
        let (found, skipped) = store.load_newest("t", 0, &rules()).expect("load");
        assert_eq!(found.map(|(_, p)| p), Some(10));
        assert_eq!(skipped[0].code, "not_a_snapshot");
        assert!(
            skipped[0].reason.starts_with("not a leadflow snapshot"),
            "{}",
            skipped[0].reason
        );
    }

    #[test]
    fn a_failed_write_leaves_no_staging_file_and_leftovers_are_removed() {
        let (_dir, store, part) = blocked_at_5();
        std::fs::write(part.join("x"), b"x").expect("file");
        let err = store
            .write("t", 0, 5, b"data".to_vec())
            .expect_err("rename fails");
        assert!(format!("{err:#}").contains("writing"), "{err:#}");
        let names = |d: &std::path::Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&part),
            vec!["snapshot-00000000000000000005.lfsn", "x"]
        );
        // A crash between write and rename leaves one; recovery removes it (and the staging
        // names of earlier versions).
        std::fs::write(part.join("snapshot-00000000000000000009.lfsn#3"), b"half").expect("tmp");
        std::fs::write(
            part.join(".snapshot-00000000000000000008.lfsn.tmp"),
            b"half",
        )
        .expect("tmp");
        assert_eq!(store.remove_leftovers("t", 0), 2);
        assert_eq!(
            names(&part),
            vec!["snapshot-00000000000000000005.lfsn", "x"]
        );
    }

    #[test]
    fn store_errors_are_one_line_with_a_hint() {
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        };
        let e = store_error(
            generic(
                "Error performing PUT http://169.254.169.254/latest/api/token in 1ms\n  403 \
                 Forbidden",
            ),
            "writing s3://b/x".into(),
        );
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("writing s3://b/x: "), "{text}");
        assert!(text.contains("no credentials found"), "{text}");
        let body = "<Error><Code>NoSuchBucket</Code></Error>".repeat(100);
        let text = store_error(generic(&body), "listing".into()).to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.len() < 800, "cut to a readable length: {}", text.len());
    }

    #[test]
    fn urls_are_checked_before_anything_is_opened() {
        assert!(check_url("file:///var/lib/leadflow", None).is_ok());
        assert!(check_url("s3://bucket/prefix", Some("http://127.0.0.1:9000")).is_ok());
        assert!(check_url("gs://bucket", None).is_ok());
        let e = check_url("ftp://host/x", None).expect_err("scheme");
        assert!(e.contains("ftp://") && e.contains("s3://"), "{e}");
        let e = check_url("s3:///prefix", None).expect_err("bucket");
        assert!(e.contains("BUCKET"), "{e}");
        let e = check_url("gs://bucket", Some("http://x")).expect_err("endpoint");
        assert!(e.contains("snapshots.endpoint"), "{e}");
        let e = check_url("/var/lib/leadflow", None).expect_err("a path");
        assert!(e.contains("file:///"), "{e}");
        let e = check_url("s3://My_Bucket/prod", None).expect_err("bucket name");
        assert!(
            e.contains("\"My_Bucket\"") && e.contains("lowercase"),
            "{e}"
        );
        assert!(check_url("s3://b2/prod", None).is_err(), "too short");
        let e = check_url("s3://bucket/prod?x=1#frag", None).expect_err("query");
        assert!(e.contains("query"), "{e}");
    }
}
