//! `leadflow run` as a child process, for tests that kill, stop or resume it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `leadflow run --config CONFIG`, appending its log (info level) to `log`.
pub fn spawn(config: &Path, log: &Path) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["run", "--config", config.to_str().expect("utf-8")])
        .env("LEADFLOW_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start leadflow run");
    Guard(child)
}

/// Kills the child when the test fails, so no orphan keeps the ports or the group.
pub struct Guard(pub Child);

impl Guard {
    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.0.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A stopped process must be resumed to die of SIGKILL promptly everywhere.
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-CONT", &self.0.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The end of a child's log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
