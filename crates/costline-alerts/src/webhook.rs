//! The webhook sender: an HTTP POST of the alert, in the webhook's format ([`Payload`]). It
//! only makes one attempt and says how it ended ([`Attempt`]); what follows is the outbox's
//! decision.
//!
//! The costline format is the alert's JSON body, signed. Headers: `Idempotency-Key: <alert id>`
//! (the same on every attempt, so receivers can drop repeats), `X-Costline-Timestamp: <unix
//! seconds>` and `X-Costline-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//!
//! A receiver verifies by recomputing the HMAC over the timestamp header, a dot and the raw
//! body bytes with its copy of the secret, comparing in constant time, and rejecting
//! timestamps older than a few minutes (replays).
//!
//! Redirects are not followed: a signed alert goes to the configured URL or nowhere, and a 3xx
//! answer is not an acceptance. It is final like other 4xx-style refusals (the receiver's
//! configuration, not a passing fault, sends it elsewhere; retrying gets the same answer).
//!
//! Slack and PagerDuty payloads ([`crate::formats`]) are not signed: Slack's URL is its secret,
//! PagerDuty's routing key is in the body. Both answer like any webhook (2xx accepted; 429 and
//! 5xx retried; other 4xx final), so the outbox treats all formats alike.
//!
//! A webhook URL may carry secrets (userinfo, a token in the path as Slack's do, or `?token=`),
//! so errors, logs and the stored delivery error name only its origin (`scheme://host:port/`).

use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, Mac};
use reqwest::{redirect, Url};
use sha2::Sha256;

use costline_core::Secret;

use crate::formats;
use crate::outbox::{AlertSender, Attempt};

/// What a webhook is sent, with the secret that format needs.
pub enum Payload {
    /// costline's JSON body, signed with this HMAC secret.
    Costline { secret: Secret },
    /// A Slack incoming-webhook message (the URL holds Slack's token).
    Slack,
    /// A PagerDuty Events API v2 event for the integration with this routing key.
    PagerDuty { routing_key: Secret },
}

/// One configured receiver.
pub struct Webhook {
    url: Url,
    /// `scheme://host:port/`: what errors and logs may show of `url`.
    origin: String,
    payload: Payload,
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

/// `scheme://host:port/` of `url`: no userinfo, path, query or fragment.
pub fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}/", url.scheme()),
        None => format!("{}://{host}/", url.scheme()),
    }
}

/// The text of a request error without the URL: reqwest's message (with the URL removed) and
/// its causes, each of which is scrubbed of the URL's secret parts as well.
fn describe(error: reqwest::Error, url: &Url) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    scrub(text, url)
}

/// `text` with every secret-bearing part of `url` (the whole URL, userinfo, path, query,
/// fragment) replaced by `***`.
fn scrub(mut text: String, url: &Url) -> String {
    let parts = [
        url.as_str(),
        url.password().unwrap_or_default(),
        url.username(),
        url.query().unwrap_or_default(),
        url.fragment().unwrap_or_default(),
        url.path(),
    ];
    for part in parts {
        // Short parts (`/`, a one-letter user) would mangle the text without hiding anything.
        if part.len() >= 4 {
            text = text.replace(part, "***");
        }
    }
    text
}

impl Webhook {
    pub fn new(url: &str, payload: Payload, timeout: Duration) -> anyhow::Result<Webhook> {
        // Neither message quotes the URL.
        let url = Url::parse(url).map_err(|e| anyhow::anyhow!("invalid URL: {e}"))?;
        let origin = origin(&url);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("{}", describe(e, &url)))
            .with_context(|| format!("creating the HTTP client for {origin}"))?;
        Ok(Webhook { url, origin, payload, client })
    }

    /// The request for one attempt: `body` (the stored costline body) in this webhook's format.
    fn request(&self, alert_id: &str, body: &str, now_secs: i64) -> Result<reqwest::RequestBuilder, String> {
        let post = self.client.post(self.url.clone()).header("content-type", "application/json");
        let parsed = || serde_json::from_str(body).map_err(|e| format!("the stored alert body is not JSON: {e}"));
        let rewritten = match &self.payload {
            Payload::Costline { secret } => {
                return Ok(post
                    .header("idempotency-key", alert_id)
                    .header("x-costline-timestamp", now_secs.to_string())
                    .header("x-costline-signature", signature(secret.expose().as_bytes(), now_secs, body.as_bytes()))
                    .body(body.to_string()))
            }
            Payload::Slack => formats::slack(&parsed()?),
            Payload::PagerDuty { routing_key } => formats::pagerduty(&parsed()?, routing_key.expose()),
        };
        Ok(post.body(rewritten.to_string()))
    }
}

impl AlertSender for Webhook {
    fn origin(&self) -> &str {
        &self.origin
    }

    fn takes_resolves(&self) -> bool {
        matches!(self.payload, Payload::PagerDuty { .. })
    }

    async fn send(&self, alert_id: &str, body: &str, now_secs: i64) -> Attempt {
        let request = match self.request(alert_id, body, now_secs) {
            Ok(request) => request,
            Err(reason) => return Attempt::Refused(reason),
        };
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                if status.as_u16() == 429 || status.is_server_error() {
                    Attempt::Retry(format!("HTTP {status}"))
                } else if status.is_redirection() {
                    Attempt::Refused(format!("HTTP {status}: redirects are not followed; configure the final URL"))
                } else {
                    Attempt::Refused(format!("HTTP {status}"))
                }
            }
            Err(e) if e.is_timeout() => Attempt::Retry("timeout".into()),
            Err(e) => Attempt::Retry(describe(e, &self.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_origin_only() {
        let url =
            Url::parse("https://bot:pa55word@hooks.example.com/services/T000/B000/XXXX?token=abcdef#frag").unwrap();
        assert_eq!(origin(&url), "https://hooks.example.com:443/");
        let text = format!("error sending request for url ({url}): oops at /services/T000/B000/XXXX?token=abcdef");
        let scrubbed = scrub(text, &url);
        for secret in ["pa55word", "T000", "abcdef", "frag"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.starts_with("error sending request"), "{scrubbed}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_without_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://user:pa55word@127.0.0.1:{port}/hook/s3cret-path?token=t0ken");
        let payload = Payload::Costline { secret: Secret::new("k".into()) };
        let hook = Webhook::new(&url, payload, Duration::from_secs(5)).unwrap();
        let Attempt::Retry(reason) = hook.send("al_x", "{}", 0).await else {
            panic!("a refused connection is retried")
        };
        for secret in ["pa55word", "s3cret", "t0ken", "user"] {
            assert!(!reason.contains(secret), "{reason}");
        }
        assert!(reason.contains("error sending request"), "{reason}");
        assert_eq!(hook.origin(), format!("http://127.0.0.1:{port}/"));
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            super::signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
