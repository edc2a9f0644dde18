//! The HTTP edge holds against hostile or broken clients, on a real worker: clients that are
//! slow to send their headers or their body are cut off within the configured timeouts; a
//! request without the right token is refused before its body is read (however large it says
//! it is); `POST /v1/events` takes only `application/json`; the bearer scheme is
//! case-insensitive and the token exact; requests over the concurrency limit are answered 503
//! at once; and after SIGTERM a request still under way is cut off after the shutdown grace.
//!
//! The clients are raw `TcpStream`s, so that each test controls exactly which bytes are sent
//! and when. The bounds on how soon the server acts leave seconds of slack for a loaded
//! machine; without the guards under test the server does not act within the waits at all.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Setup, Worker};

const TOKEN: &str = "edge-token";

fn event(id: &str) -> String {
    format!(
        r#"{{"externalRequestId":"{id}","provider":"openai","model":"gpt-4o","endpointTag":"edge.test","inputTokens":10,"outputTokens":5,"status":"success"}}"#
    )
}

/// A worker with the token set and `settings` as `http.*` keys; waits for its HTTP server.
fn start(name: &str, settings: &[(&str, &str)]) -> (Setup, Worker) {
    let mut setup = Setup::new(name);
    setup.env.push(("COSTLINE_HTTP_TOKEN".into(), TOKEN.into()));
    for (key, value) in settings {
        setup.env.push((format!("COSTLINE_HTTP__{}", key.to_uppercase()), value.to_string()));
    }
    // The topic must exist before a worker subscribes.
    assert!(setup.command(&["produce", "--count", "0"]).status().unwrap().success());
    let worker = setup.spawn_worker(name);
    worker.wait_http_up();
    (setup, worker)
}

fn connect(worker: &Worker) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", worker.port)).expect("connecting to the worker");
    stream.set_nodelay(true).unwrap();
    stream
}

/// The head of a `POST /v1/events` request; `authorization` is the whole header value.
fn post_head(content_type: Option<&str>, authorization: Option<&str>, content_length: usize) -> String {
    let mut head = format!("POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {content_length}\r\n");
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(authorization) = authorization {
        head.push_str(&format!("Authorization: {authorization}\r\n"));
    }
    head + "\r\n"
}

/// What the server sent within a wait: the status of its answer (`None` if it closed the
/// connection without one, or sent nothing in time), everything received, whether the server
/// closed the connection, and when the reading stopped.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    text: String,
    closed: bool,
    after: Duration,
}

fn answer(stream: &mut TcpStream, limit: Duration) -> Answer {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => {
                received.extend_from_slice(&buffer[..n]);
                if complete(&received) {
                    break false;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("reading the answer: {e}"),
        }
    };
    let text = String::from_utf8_lossy(&received).to_string();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|code| code.parse().ok());
    Answer { status, text, closed, after: start.elapsed() }
}

/// `received` holds a whole response: its head, and as many body bytes as its Content-Length.
fn complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received).to_lowercase();
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head.lines().find_map(|line| line.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
    length.is_some_and(|length| body.len() >= length)
}

/// Sends `bytes` one at a time, `pause` apart, on a clone of `stream`, until they are all sent
/// or the server stops taking them.
fn dribble(stream: &TcpStream, bytes: Vec<u8>, pause: Duration) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for byte in bytes {
            std::thread::sleep(pause);
            if writer.write_all(&[byte]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn slow_clients_are_cut_off_within_the_timeouts() {
    let (_setup, worker) = start(
        "edge_slow",
        &[("header_timeout_ms", "1000"), ("body_timeout_ms", "1000"), ("request_timeout_ms", "3000")],
    );
    let auth = format!("Bearer {TOKEN}");

    // Headers that never end: one byte every 200 ms. Closed at the header timeout.
    let stream = connect(&worker);
    let head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_string() + &"a".repeat(200);
    let writer = dribble(&stream, head.into_bytes(), Duration::from_millis(200));
    let got = answer(&mut stream.try_clone().unwrap(), Duration::from_secs(15));
    assert!(
        got.closed && got.after < Duration::from_secs(6),
        "slow headers were not cut off: {:?} after {:?}",
        got.text,
        got.after
    );
    writer.join().unwrap();

    // A body that stops after a few bytes: 408 at the body timeout, before the request timeout.
    let mut stream = connect(&worker);
    stream.write_all(post_head(Some("application/json"), Some(&auth), 1000).as_bytes()).unwrap();
    stream.write_all(b"[{\"extern").unwrap();
    let got = answer(&mut stream, Duration::from_secs(15));
    assert_eq!(got.status, Some(408), "a stalled body: {:?} after {:?}", got.text, got.after);
    assert!(got.text.contains("http.body_timeout_ms"), "{}", got.text);
    assert!(got.after < Duration::from_secs(6), "the stalled body was cut after {:?}", got.after);

    // A body that keeps dribbling (never pausing as long as the body timeout): 408 at the
    // request timeout.
    let stream = connect(&worker);
    (&stream).write_all(post_head(Some("application/json"), Some(&auth), 1000).as_bytes()).unwrap();
    let writer = dribble(&stream, vec![b' '; 1000], Duration::from_millis(200));
    let got = answer(&mut stream.try_clone().unwrap(), Duration::from_secs(15));
    assert_eq!(got.status, Some(408), "a dribbling body: {:?} after {:?}", got.text, got.after);
    assert!(got.after < Duration::from_secs(8), "the dribbling body was cut after {:?}", got.after);
    drop(stream);
    writer.join().unwrap();

    assert_eq!(worker.http_get("/healthz").0, 200, "the worker still serves");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn requests_without_the_token_are_refused_before_the_body_is_read() {
    let (_setup, worker) = start("edge_auth", &[]);
    // A body far over http.max_body_bytes, and one under it: neither is waited for.
    for content_length in [1usize << 30, 100_000] {
        for authorization in [None, Some("Bearer wrong-token".to_string()), Some(format!("Basic {TOKEN}"))] {
            let mut stream = connect(&worker);
            stream
                .write_all(post_head(Some("application/json"), authorization.as_deref(), content_length).as_bytes())
                .unwrap();
            stream.write_all(b"[{\"externalRequestId\":").unwrap();
            let got = answer(&mut stream, Duration::from_secs(10));
            assert_eq!(
                got.status,
                Some(401),
                "Content-Length {content_length}, authorization {authorization:?}: {:?} after {:?}",
                got.text,
                got.after
            );
            assert!(got.after < Duration::from_secs(5), "answered after {:?}", got.after);
            assert!(got.text.to_lowercase().contains("www-authenticate: bearer"), "{}", got.text);
        }
    }
    assert_eq!(worker.stop(), 0);
}

/// Status and body of a whole request sent at once on a fresh connection.
fn request(worker: &Worker, head_and_body: &str) -> (Option<u16>, String) {
    let mut stream = connect(worker);
    stream.write_all(head_and_body.as_bytes()).unwrap();
    let got = answer(&mut stream, Duration::from_secs(20));
    (got.status, got.text)
}

fn get(worker: &Worker, path: &str, authorization: Option<&str>) -> (Option<u16>, String) {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    request(worker, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"))
}

fn post(worker: &Worker, content_type: Option<&str>, authorization: &str, body: &str) -> (Option<u16>, String) {
    request(worker, &(post_head(content_type, Some(authorization), body.len()) + body))
}

#[test]
fn ingest_takes_only_json_and_the_token_in_any_scheme_case() {
    let (setup, worker) = start("edge_types", &[]);
    let auth = format!("Bearer {TOKEN}");

    // Content types a cross-site form or `fetch` without preflight can send, and none at all.
    for content_type in
        [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data"), None]
    {
        let (status, text) = post(&worker, content_type, &auth, &event("typed-wrong"));
        assert_eq!(status, Some(415), "Content-Type {content_type:?}: {text}");
    }
    for (i, content_type) in
        ["application/json", "application/json; charset=utf-8", "Application/JSON"].iter().enumerate()
    {
        let (status, text) = post(&worker, Some(content_type), &auth, &event(&format!("typed-{i}")));
        assert_eq!(status, Some(200), "Content-Type {content_type}: {text}");
        assert!(text.contains("\"accepted\":1"), "{text}");
    }

    // The scheme in any case, the token exactly.
    for (i, scheme) in ["bearer", "BEARER", "Bearer"].iter().enumerate() {
        let (status, text) =
            post(&worker, Some("application/json"), &format!("{scheme} {TOKEN}"), &event(&format!("scheme-{i}")));
        assert_eq!(status, Some(200), "scheme {scheme}: {text}");
    }
    for wrong in [format!("Bearer {TOKEN}x"), format!("Bearer {}", &TOKEN[1..]), "Bearer".to_string()] {
        let (status, text) = post(&worker, Some("application/json"), &wrong, &event("wrong-token"));
        assert_eq!(status, Some(401), "{wrong}: {text}");
        for path in ["/v1/budgets", "/v1/budgets/none", "/v1/dashboard", "/v1/dashboard/prompt-versions"] {
            assert_eq!(get(&worker, path, Some(&wrong)).0, Some(401), "{path} with {wrong}");
        }
    }
    assert_eq!(get(&worker, "/v1/budgets", Some(&format!("bearer {TOKEN}"))).0, Some(200));
    for open in ["/healthz", "/metrics", "/dashboard"] {
        assert_eq!(get(&worker, open, None).0, Some(200), "{open} stays open");
    }

    setup.wait_accounted(6, Duration::from_secs(60));
    let counted = setup.query("SELECT count() FROM usage_events WHERE external_request_id LIKE 'typed-wrong%' OR external_request_id = 'wrong-token'");
    assert_eq!(counted.trim(), "0", "refused requests published nothing");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn requests_over_the_concurrency_limit_are_answered_503_at_once() {
    let (_setup, worker) = start("edge_limit", &[("max_concurrent_requests", "1"), ("body_timeout_ms", "30000")]);
    let auth = format!("Bearer {TOKEN}");
    // One ingest request holds the only slot while its body is incomplete.
    let body = event("held");
    let (first_part, rest) = body.split_at(20);
    let mut held = connect(&worker);
    held.write_all(post_head(Some("application/json"), Some(&auth), body.len()).as_bytes()).unwrap();
    held.write_all(first_part.as_bytes()).unwrap();
    // No other request until it is under way: one sent at the same moment could take the slot
    // first, and the held one would be the one shed.
    std::thread::sleep(Duration::from_millis(500));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let (status, text) = get(&worker, "/v1/budgets", Some(&auth));
        if status == Some(503) && text.contains("http.max_concurrent_requests") {
            assert!(started.elapsed() < Duration::from_secs(5), "shed only after {:?}", started.elapsed());
            break;
        }
        if Instant::now() > deadline {
            let held = answer(&mut held, Duration::from_secs(1));
            panic!(
                "a second request was never shed; last answer: {text}\nthe held request: {held:?}\n{}",
                worker.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&worker, "/healthz", None).0, Some(200), "health checks do not count");
    assert_eq!(get(&worker, "/v1/budgets", None).0, Some(401), "requests without the token take no slot");

    held.write_all(rest.as_bytes()).unwrap();
    let got = answer(&mut held, Duration::from_secs(20));
    assert_eq!(got.status, Some(200), "{}", got.text);
    let (status, text) = get(&worker, "/v1/budgets", Some(&auth));
    assert!(!text.contains("http.max_concurrent_requests"), "the slot was not given back: {status:?} {text}");
    assert_eq!(worker.stop(), 0);
}

#[test]
fn shutdown_cuts_off_requests_still_under_way_after_the_grace() {
    let (_setup, worker) = start(
        "edge_shutdown",
        &[("shutdown_grace_ms", "1000"), ("body_timeout_ms", "60000"), ("request_timeout_ms", "60000")],
    );
    let mut held = connect(&worker);
    held.write_all(post_head(Some("application/json"), Some(&format!("Bearer {TOKEN}")), 1000).as_bytes()).unwrap();
    held.write_all(b"[").unwrap();
    // The request is under way once the worker reads its body; give it a moment to get there.
    std::thread::sleep(Duration::from_millis(500));
    worker.signal("TERM");
    let got = answer(&mut held, Duration::from_secs(20));
    assert!(got.closed, "the held request's connection stayed open: {:?}", got.text);
    assert!(got.after < Duration::from_secs(8), "cut off only after {:?}", got.after);
    assert_eq!(worker.stop(), 0);
}
