//! Webhook delivery: an HTTP POST of the alert's JSON body, signed.
//!
//! Headers: `Idempotency-Key: <alert id>` (the same on every attempt, so receivers can drop
//! repeats), `X-Costline-Timestamp: <unix seconds>` and
//! `X-Costline-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//!
//! A receiver verifies by recomputing the HMAC over the timestamp header, a dot and the raw
//! body bytes with its copy of the secret, comparing in constant time, and rejecting
//! timestamps older than a few minutes (replays).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Timeouts, connection errors, 429 and 5xx: try again later.
    Retry(String),
    /// Any other status: the receiver refuses this alert; do not try again.
    Refused(String),
}

/// One configured receiver.
pub struct Webhook {
    url: String,
    secret: Secret,
    client: reqwest::Client,
}

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(url: String, secret: Secret, timeout: Duration) -> anyhow::Result<Webhook> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Webhook { url, secret, client })
    }

    pub async fn deliver(&self, alert_id: &str, body: &str, now_secs: i64) -> Attempt {
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", alert_id)
            .header("x-costline-timestamp", now_secs.to_string())
            .header("x-costline-signature", signature(self.secret.expose().as_bytes(), now_secs, body.as_bytes()))
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                if status.as_u16() == 429 || status.is_server_error() {
                    Attempt::Retry(format!("HTTP {status}"))
                } else {
                    Attempt::Refused(format!("HTTP {status}"))
                }
            }
            Err(e) if e.is_timeout() => Attempt::Retry("timeout".into()),
            Err(e) => Attempt::Retry(format!("{e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
