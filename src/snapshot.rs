//! Snapshot store on a local (or mounted, shared) directory: one folder per internal topic
//! partition, files named by the log position they cover, written atomically (temp file,
//! fsync, rename, fsync of the folder) and pruned to the newest `retain`.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::engine::PartitionState;
use crate::model::rules::Ruleset;

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".lfsn";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Clone, Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    retain: usize,
}

/// A snapshot that could not be used, and why (reported, then the previous one is tried).
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
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

impl SnapshotStore {
    pub fn new(root: impl Into<PathBuf>, retain: u32) -> SnapshotStore {
        SnapshotStore {
            root: root.into(),
            retain: retain.max(1) as usize,
        }
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.root.join(format!("{topic}-{partition}"))
    }

    /// Writes a snapshot atomically and prunes old ones; returns its path and size.
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        bytes: &[u8],
    ) -> anyhow::Result<(PathBuf, u64)> {
        let dir = self.partition_dir(topic, partition);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let name = format!("{PREFIX}{position:020}{SUFFIX}");
        let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
        let path = dir.join(&name);
        let written = (|| -> anyhow::Result<()> {
            let mut f =
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            f.write_all(bytes)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.sync_all()
                .with_context(|| format!("syncing {}", tmp.display()))?;
            fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
        })();
        if let Err(e) = written {
            // A half-written file would only take the space the next attempt needs.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the folder itself is synced.
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        self.prune(&dir)?;
        Ok((path, bytes.len() as u64))
    }

    /// Removes the temporary files a crash left behind in a partition's folder (a write is
    /// complete only once renamed); returns how many.
    pub fn remove_leftovers(&self, topic: &str, partition: i32) -> usize {
        let dir = self.partition_dir(topic, partition);
        let Ok(entries) = fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!(".{PREFIX}"))
                && name.ends_with(TMP_SUFFIX)
                && fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Snapshot files of a partition, newest (highest position) first.
    pub fn list(&self, topic: &str, partition: i32) -> Vec<(i64, PathBuf)> {
        let dir = self.partition_dir(topic, partition);
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<(i64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let pos = name
                    .strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()?;
                Some((pos, e.path()))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.0));
        out
    }

    fn prune(&self, dir: &Path) -> anyhow::Result<()> {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let Some((topic, partition)) = name.rsplit_once('-') else {
            return Ok(());
        };
        let Ok(partition) = partition.parse() else {
            return Ok(());
        };
        for (_, old) in self.list(topic, partition).into_iter().skip(self.retain) {
            fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(())
    }

    /// The newest snapshot that decodes, with its position, and the newer ones that did not.
    pub fn load_newest(
        &self,
        topic: &str,
        partition: i32,
        rules: &Arc<Ruleset>,
    ) -> (Option<(PartitionState, i64)>, Vec<Skipped>) {
        let mut skipped = Vec::new();
        for (_, path) in self.list(topic, partition) {
            let decoded = fs::read(&path)
                .map_err(|e| ("unreadable", format!("cannot read it: {e}")))
                .and_then(|b| {
                    PartitionState::decode_snapshot(Arc::clone(rules), &b)
                        .map_err(|e| (e.code(), e.to_string()))
                });
            match decoded {
                Ok(found) => return (Some(found), skipped),
                Err((code, reason)) => skipped.push(Skipped { path, code, reason }),
            }
        }
        (None, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn rules() -> Arc<Ruleset> {
        Settings::from_toml(include_str!("../examples/config.toml"))
            .expect("example config")
            .rules
    }

    #[test]
    fn writes_atomically_prunes_and_loads_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::new(dir.path(), 2);
        let st = PartitionState::new(rules());
        for pos in [5, 17, 9] {
            store
                .write("t", 0, pos, &st.encode_snapshot(pos))
                .expect("write");
        }
        let kept: Vec<i64> = store.list("t", 0).iter().map(|(p, _)| *p).collect();
        assert_eq!(kept, vec![17, 9], "the newest two by position");
        let (found, skipped) = store.load_newest("t", 0, &rules());
        assert_eq!(found.map(|(_, p)| p), Some(17));
        assert!(skipped.is_empty());
        assert!(store.list("t", 1).is_empty());
    }

    #[test]
    fn a_corrupt_newest_snapshot_is_reported_and_the_previous_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::new(dir.path(), 3);
        let st = PartitionState::new(rules());
        store
            .write("t", 3, 10, &st.encode_snapshot(10))
            .expect("write");
        let (newest, _) = store
            .write("t", 3, 20, &st.encode_snapshot(20))
            .expect("write");
        let mut bytes = fs::read(&newest).expect("read");
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        fs::write(&newest, bytes).expect("corrupt");
        let (found, skipped) = store.load_newest("t", 3, &rules());
        assert_eq!(found.map(|(_, p)| p), Some(10));
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].reason.contains("checksum"),
            "{}",
            skipped[0].reason
        );
        assert_eq!(skipped[0].code, "corrupt");
    }

    #[test]
    fn a_file_that_is_not_a_snapshot_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::new(dir.path(), 3);
        let st = PartitionState::new(rules());
        store
            .write("t", 0, 10, &st.encode_snapshot(10))
            .expect("write");
        let part = store.partition_dir("t", 0);
        // What an operator may leave there: notes, a copy of another file.
        fs::write(
            part.join("snapshot-00000000000000000020.lfsn"),
            b"Vacation notes\n",
        )
        .expect("write");
        let (found, skipped) = store.load_newest("t", 0, &rules());
        assert_eq!(found.map(|(_, p)| p), Some(10));
        assert_eq!(skipped[0].code, "not_a_snapshot");
        assert!(
            skipped[0].reason.starts_with("not a leadflow snapshot"),
            "{}",
            skipped[0].reason
        );
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::new(dir.path(), 3);
        let part = store.partition_dir("t", 0);
        fs::create_dir_all(&part).expect("mkdir");
        // The target name is taken by a folder: the rename fails after the data was written.
        fs::create_dir(part.join("snapshot-00000000000000000005.lfsn")).expect("mkdir");
        fs::write(part.join("x"), b"x").expect("file");
        let err = store.write("t", 0, 5, b"data").expect_err("rename fails");
        assert!(format!("{err:#}").contains("renaming"), "{err:#}");
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(d)
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
        // A crash between create and rename leaves one; recovery removes it.
        fs::write(
            part.join(".snapshot-00000000000000000009.lfsn.tmp"),
            b"half",
        )
        .expect("tmp");
        assert_eq!(store.remove_leftovers("t", 0), 1);
        assert_eq!(
            names(&part),
            vec!["snapshot-00000000000000000005.lfsn", "x"]
        );
    }
}
