//! A real HTTP receiver on loopback for the notification tests: it records every request
//! (path, headers, body, arrival) and answers what the test's function says, each request
//! on a thread of its own (a slow answer to one target never holds another's).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What to answer: status, extra headers, and how long to wait before answering.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Answer {
    pub fn ok() -> Answer {
        Answer::status(200)
    }
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
}

type Respond = dyn Fn(&str, usize) -> Answer + Send + Sync;

pub struct Receiver {
    pub addr: String,
    got: Arc<Mutex<Vec<Request>>>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

impl Receiver {
    /// On a free loopback port; `respond(path, n)` answers the n-th request (from 0) to `path`.
    pub fn start(respond: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Receiver {
        Receiver::start_on("127.0.0.1:0", respond)
    }

    pub fn start_on(
        addr: &str,
        respond: impl Fn(&str, usize) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let server = Arc::new(tiny_http::Server::http(addr).expect("bind the receiver"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("ip address")
            .to_string();
        let got: Arc<Mutex<Vec<Request>>> = Arc::default();
        let respond: Arc<Respond> = Arc::new(respond);
        let (s, g) = (Arc::clone(&server), Arc::clone(&got));
        std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                let at = Instant::now();
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let path = req.url().to_string();
                let headers = req
                    .headers()
                    .iter()
                    .map(|h| (h.field.to_string(), h.value.to_string()))
                    .collect();
                let n = {
                    let mut list = g.lock().expect("lock");
                    let n = list.iter().filter(|r| r.path == path).count();
                    list.push(Request {
                        path: path.clone(),
                        headers,
                        body,
                        at,
                    });
                    n
                };
                let respond = Arc::clone(&respond);
                std::thread::spawn(move || {
                    let a = respond(&path, n);
                    std::thread::sleep(a.delay);
                    let mut resp =
                        tiny_http::Response::from_string("ok").with_status_code(a.status);
                    for (k, v) in a.headers {
                        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                            resp = resp.with_header(h);
                        }
                    }
                    let _ = req.respond(resp);
                });
            }
        });
        Receiver { addr, got, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().expect("lock").clone()
    }

    pub fn to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}
