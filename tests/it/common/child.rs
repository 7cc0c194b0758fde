//! `leadflow run` as a child process, for tests that kill, stop or resume it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `leadflow run --config CONFIG`, appending its log (info level) to `log`.
pub fn spawn(config: &Path, log: &Path) -> Guard {
    spawn_under(&[], &[], config, log)
}

/// Starts `PREFIX... leadflow run --config CONFIG` (e.g. `faketime -f +30m`, or `unshare`)
/// with `env` added, appending its log (info level) to `log`. A prefix must end by exec'ing
/// its last arguments, so the child's PID is leadflow's.
pub fn spawn_under(prefix: &[&str], env: &[(&str, &str)], config: &Path, log: &Path) -> Guard {
    spawn_command(prefix, env, "run", config, log)
}

/// Starts `leadflow notify --config CONFIG`, appending its log to `log`.
pub fn spawn_notify(config: &Path, log: &Path) -> Guard {
    spawn_command(&[], &[], "notify", config, log)
}

fn spawn_command(
    prefix: &[&str],
    env: &[(&str, &str)],
    command: &str,
    config: &Path,
    log: &Path,
) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let bin = env!("CARGO_BIN_EXE_leadflow");
    let config = config.to_str().expect("utf-8");
    let mut args: Vec<&str> = prefix.to_vec();
    args.extend([bin, command, "--config", config]);
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
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

/// The address the child's HTTP endpoints are bound to, from its log (`http.listen` with
/// port 0), once it is there.
pub fn http_address(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("serving /metrics"))?;
    let at = line.find("127.0.0.1:")?;
    let rest = &line[at..];
    let end = rest
        .char_indices()
        .skip("127.0.0.1:".len())
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(rest.len(), |(i, _)| i);
    Some(rest[..end].to_string())
}

/// The end of a child's log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
