//! A real HTTP webhook receiver on 127.0.0.1 for the alert tests: it records every request
//! (headers and body), verifies nothing itself, and answers from a script (status codes, a
//! redirect, or a hang longer than the sender's timeout), then 200 once the script is used up.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// `302 Found` to this URL.
    Redirect(String),
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub struct Receiver {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(script: Vec<Reply>) -> Receiver {
        Self::start_on(0, script)
    }

    /// Listens on `port` (0: any free port).
    pub fn start_on(port: u16, script: Vec<Reply>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (log, script) = (log.clone(), script.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut headers = Vec::new();
                    let mut line = String::new();
                    reader.read_line(&mut line).ok(); // request line
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.trim_end().split_once(':') {
                            headers.push((name.trim().to_string(), value.trim().to_string()));
                        }
                    }
                    let length = headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).ok();
                    log.lock().unwrap().push(Received { headers, body: String::from_utf8_lossy(&body).into_owned() });
                    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
                    let (status, extra) = match reply {
                        Reply::Status(status) => (status, String::new()),
                        Reply::Redirect(to) => (302, format!("location: {to}\r\n")),
                        Reply::Hang(duration) => {
                            std::thread::sleep(duration);
                            (200, String::new())
                        }
                    };
                    let _ =
                        write!(stream, "HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n");
                });
            }
        });
        Receiver { port, received }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

/// Whether `request` carries a valid signature for `secret` (recomputed here, independently).
pub fn signature_is_valid(request: &Received, secret: &str) -> bool {
    use hmac::{Hmac, Mac};
    let (Some(timestamp), Some(signature)) =
        (request.header("x-costline-timestamp"), request.header("x-costline-signature"))
    else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", request.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    expected == signature
}
