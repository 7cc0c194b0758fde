//! An S3-API server for the snapshot store tests: the one at `LEADFLOW_TEST_S3` (an endpoint
//! URL; `.ci/run` starts moto's standalone server), or `moto_server` started here when it is on
//! the PATH (`pip install 'moto[server]'`). moto accepts any credentials; the tests pass
//! `test`/`test` as the standard AWS variables, as a deployment would pass real ones.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment a leadflow child needs to reach the test server.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
];

pub struct S3 {
    /// `http://host:port`
    pub endpoint: String,
    child: Option<Child>,
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl S3 {
    /// The test server, or `None` (the caller says why it skips).
    pub fn start() -> Option<S3> {
        if let Ok(ep) = std::env::var("LEADFLOW_TEST_S3") {
            if !ep.trim().is_empty() {
                return Some(S3 {
                    endpoint: ep.trim().trim_end_matches('/').to_string(),
                    child: None,
                });
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s3 = S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s3)
    }

    /// Why the S3 tests skip without a server.
    pub const SKIP: &'static str =
        "skipped: needs an S3-API server: LEADFLOW_TEST_S3=http://HOST:PORT \
         (moto; .ci/run starts one) or moto_server on the PATH (pip install 'moto[server]')";

    /// Creates a bucket (a valid, unique name derived from `name`) and returns its name.
    pub fn bucket(&self, name: &str) -> String {
        let mut b: String = name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        b.truncate(60);
        let b = b.trim_matches('-').to_string();
        let url = format!("{}/{b}", self.endpoint);
        let resp = ureq::put(&url).send_empty().expect("create the bucket");
        assert!(
            resp.status().is_success(),
            "create bucket {b}: {}",
            resp.status()
        );
        b
    }

    /// A client of the test server for `bucket`, to look at and tamper with what leadflow
    /// wrote.
    pub fn client(&self, bucket: &str) -> Client {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("S3 client");
        Client {
            store: Arc::new(store),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }
}

pub struct Client {
    store: Arc<dyn object_store::ObjectStore>,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// Object names under `prefix` with their sizes.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        use futures_util::TryStreamExt;
        let prefix = object_store::path::Path::from(prefix);
        self.rt.block_on(async {
            let metas: Vec<object_store::ObjectMeta> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .expect("list");
            metas
                .into_iter()
                .map(|m| (m.location.to_string(), m.size))
                .collect()
        })
    }

    /// Positions of the snapshots under `prefix`, newest first.
    pub fn positions(&self, prefix: &str) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .list(prefix)
            .iter()
            .filter_map(|(name, _)| {
                name.rsplit('/')
                    .next()?
                    .strip_prefix("snapshot-")?
                    .strip_suffix(".lfsn")?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }

    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(name);
        self.rt
            .block_on(self.store.put(&path, bytes.into()))
            .expect("put");
    }
}

/// A TCP proxy in front of a server that can be cut (every connection closed, new ones
/// refused at once) and restored: an unreachable bucket without stopping the server.
pub struct Proxy {
    pub addr: String,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (Arc::clone(&open), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    let mut list = c.lock().expect("lock");
                    list.push(a);
                    list.push(b);
                }
                pipe(client.try_clone(), server.try_clone());
                pipe(server.try_clone(), client.try_clone());
            }
        });
        Proxy { addr, open, conns }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.conns.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(from: std::io::Result<TcpStream>, to: std::io::Result<TcpStream>) {
    let (Ok(mut from), Ok(mut to)) = (from, to) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
