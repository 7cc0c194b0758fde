//! A minimal HTTP client and Prometheus text reader for tests of the real endpoints.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

/// `GET path` on `addr`: (status, body).
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP server");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// `GET path` on `addr` that must be answered within `limit` (like a Kubernetes probe's
/// `timeoutSeconds`): (status, body), or what went wrong.
pub fn get_within(
    addr: &str,
    path: &str,
    limit: std::time::Duration,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().map_err(|e| format!("{e}"))?, limit)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit))
        .map_err(|e| format!("{e}"))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("{e}"))?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .map_err(|e| format!("no answer to {path} within {limit:?}: {e}"))?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {raw:?}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
