//! The signature of a webhook body: HMAC-SHA256 (RFC 2104) over `"{timestamp}.{body}"`, sent as
//! `X-Leadflow-Signature: t={timestamp},v1={hex}`. The timestamp (Unix seconds) inside the
//! signed text lets a receiver refuse replays of old requests (docs/notifications.md shows
//! the check).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header value for `body` sent at `timestamp` (Unix seconds) with `secret`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (RFC 2104: long keys are hashed first).
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// What a receiver does: parses the header, recomputes the MAC and compares in constant time;
/// refuses a timestamp more than `tolerance_s` away from `now_s`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now_s: i64, tolerance_s: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_s - t).abs() > tolerance_s {
        return false;
    }
    let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&v1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's HMAC matches RFC 4231 (test case 2), and the header is that HMAC over
    /// "{timestamp}.{body}"; `verify` accepts it and refuses any change.
    #[test]
    fn the_mac_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231, test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("key");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Ours signs "1700000000.{body}".
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").expect("key");
        m.update(b"1700000000.{\"a\":1}");
        let want = format!("t=1700000000,v1={}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(signature(b"k", 1_700_000_000, b"{\"a\":1}"), want);
        assert!(verify(b"k", &want, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(
            !verify(b"k", &want, b"{\"a\":2}", 1_700_000_010, 300),
            "another body"
        );
        assert!(
            !verify(b"x", &want, b"{\"a\":1}", 1_700_000_010, 300),
            "another key"
        );
        assert!(
            !verify(b"k", &want, b"{\"a\":1}", 1_700_009_000, 300),
            "too old"
        );
    }
}
