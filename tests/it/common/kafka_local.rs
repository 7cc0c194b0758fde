//! A private Apache Kafka broker for one test (deploy/kafka-local on free ports, in a temporary
//! folder), for tests that stop or freeze the broker and so cannot share one.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct LocalKafka {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
    pub bootstrap: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kafka-local/kafka-local")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl LocalKafka {
    /// Starts a broker; `None` when Java or Maven is missing (never in CI: it panics there).
    pub fn start() -> Option<LocalKafka> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, controller_port) = (free_port(), free_port());
        let mut k = LocalKafka {
            dir,
            port,
            controller_port,
            bootstrap: String::new(),
        };
        let out = k.run("start").stdout(Stdio::piped()).output();
        match out {
            Ok(o) if o.status.success() => {
                k.bootstrap = String::from_utf8_lossy(&o.stdout).trim().to_string();
                Some(k)
            }
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "deploy/kafka-local must start in CI: {other:?}"
                );
                None
            }
        }
    }

    fn run(&self, verb: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(script())
            .arg(verb)
            .env("KAFKA_LOCAL_PORT", self.port.to_string())
            .env(
                "KAFKA_LOCAL_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .env("KAFKA_LOCAL_DIR", self.dir.path().join("kafka"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// Sends a signal (`STOP`, `CONT`) to the broker's JVM.
    pub fn signal(&self, name: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("kafka/kafka.pid")).expect("pid");
        let ok = Command::new("kill")
            .args([format!("-{name}"), pid.trim().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} the broker");
    }
}

impl Drop for LocalKafka {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.path().join("kafka/kafka.pid"));
        if let Ok(pid) = pid {
            let _ = Command::new("kill")
                .args(["-CONT", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.run("stop").stdout(Stdio::null()).status();
    }
}
