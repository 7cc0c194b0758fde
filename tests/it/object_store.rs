//! The snapshot store on an S3-API server (moto; `LEADFLOW_TEST_S3` or `moto_server` on the
//! PATH, else the test says so and returns): a snapshot larger than one part goes up as a
//! multipart upload and reads back byte for byte, also streamed while encoded (an abandoned
//! stream's upload is aborted), retention keeps the newest, and a store
//! that cannot be reached at recovery is an error, never "no snapshot".
//!
//! One test in its own binary: it sets the standard AWS variables, which the store reads from
//! the environment as a deployment's would be.

use crate::common;

use std::sync::Arc;

use common::s3::{AWS_ENV, S3};
use leadflow::config::Settings;
use leadflow::engine::PartitionState;
use leadflow::snapshot::{SnapshotStore, StoreConfig};

#[test]
fn snapshots_in_a_bucket_multipart_retention_and_an_unreachable_store() {
    let Some(s3) = S3::start() else {
        eprintln!("{}", S3::SKIP);
        return;
    };
    for (k, v) in AWS_ENV {
        std::env::set_var(k, v);
    }
    let bucket = s3.bucket(&format!("objstore-{}", std::process::id()));
    let store = SnapshotStore::open(&StoreConfig {
        url: format!("s3://{bucket}/lf"),
        endpoint: Some(s3.endpoint.clone()),
        retain: 2,
    })
    .expect("open the store");
    let rules = Settings::from_toml(
        &std::fs::read_to_string(common::examples_dir().join("config.toml")).expect("example"),
    )
    .expect("config")
    .rules;
    let small = PartitionState::new(Arc::clone(&rules));

    store
        .write("t", 0, 5, small.encode_snapshot(5))
        .expect("a small snapshot: one PUT");
    // 40 MiB: three parts of 16 MiB (the last one shorter).
    let big: Vec<u8> = (0..40usize << 20).map(|i| (i % 253) as u8).collect();
    let w = store
        .write("t", 0, 9, big.clone())
        .expect("a multipart upload");
    assert_eq!(w.bytes, big.len() as u64);
    assert_eq!(
        w.path,
        format!("s3://{bucket}/lf/t-0/snapshot-00000000000000000009.lfsn")
    );
    store
        .write("t", 0, 12, small.encode_snapshot(12))
        .expect("a newer one");

    let client = s3.client(&bucket);
    let listed = client.list("lf/t-0/");
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "lf/t-0/snapshot-00000000000000000009.lfsn",
            "lf/t-0/snapshot-00000000000000000012.lfsn"
        ],
        "the newest two are kept"
    );
    assert_eq!(listed[0].1, big.len() as u64);
    let positions: Vec<i64> = store
        .list("t", 0)
        .expect("list")
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(positions, vec![12, 9]);

    // The parts joined into the same bytes (read back through the store's own reader: the
    // newest is a real snapshot, so load it, then check the big one by hand).
    let (found, skipped) = store.load_newest("t", 0, &rules).expect("load");
    assert_eq!(found.map(|(_, p)| p), Some(12));
    assert!(skipped.is_empty());
    // An object's bytes, read with a plain GET.
    let object = |name: &str| -> Vec<u8> {
        ureq::get(&format!("{}/{bucket}/{name}", s3.endpoint))
            .call()
            .expect("GET the object")
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .expect("body")
    };
    let read = object("lf/t-0/snapshot-00000000000000000009.lfsn");
    assert!(read == big, "the multipart object equals what was written");

    // Streamed while it is encoded (the service's checkpoints): the multipart upload starts
    // before the snapshot's end, nothing is visible until the end, and an abandoned stream's
    // upload is aborted (its parts are not kept, nor billed).
    let uploads = || -> usize {
        let mut resp = ureq::get(&format!("{}/{bucket}?uploads", s3.endpoint))
            .call()
            .expect("list the multipart uploads");
        let xml = resp.body_mut().read_to_string().expect("body");
        xml.matches("<Upload>").count()
    };
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "waited 60 s for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    assert_eq!(uploads(), 0);
    let stream = store.stream("s", 0, 7);
    for chunk in big.chunks(3_000_001) {
        stream.send(chunk.to_vec());
    }
    wait("an upload started before the end", &|| uploads() == 1);
    assert!(
        client.list("lf/s-0/").is_empty(),
        "not visible before the end"
    );
    drop(stream);
    wait("the abandoned upload to be aborted", &|| uploads() == 0);
    assert!(client.list("lf/s-0/").is_empty());

    let stream = store.stream("s", 0, 8);
    for chunk in big.chunks(3_000_001) {
        stream.send(chunk.to_vec());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    stream.finish(Vec::new(), (), tx);
    let ((), written) = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the outcome is reported");
    assert_eq!(written.expect("streamed").bytes, big.len() as u64);
    let read = object("lf/s-0/snapshot-00000000000000000008.lfsn");
    assert!(read == big, "the streamed object equals what was sent");
    assert_eq!(uploads(), 0);

    // A bucket that does not exist: one readable line, the server's answer once, a hint.
    let missing = SnapshotStore::open(&StoreConfig {
        url: format!("s3://{bucket}-missing/lf"),
        endpoint: Some(s3.endpoint.clone()),
        retain: 2,
    })
    .expect("open");
    let err = format!(
        "{:#}",
        missing
            .write("t", 0, 1, small.encode_snapshot(1))
            .expect_err("no such bucket")
    );
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    eprintln!("a missing bucket: {err}");
    assert!(err.matches("NoSuchBucket").count() <= 2, "{err}");

    // An endpoint nobody answers: recovery gets an error naming the store, not "none".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let gone = SnapshotStore::open(&StoreConfig {
        url: format!("s3://{bucket}/lf"),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        retain: 2,
    })
    .expect("opening does no I/O");
    let err = match gone.load_newest("t", 0, &rules) {
        Ok(_) => panic!("an unreachable store must be an error"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("listing the snapshots") && err.contains(&format!("s3://{bucket}")),
        "{err}"
    );
}
