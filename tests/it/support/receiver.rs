//! A webhook receiver on loopback that records every request and answers as told.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Hit {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Hit {
    /// The body as `[(uid, status)]`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How to answer one request.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, retry_after: None, delay: Duration::ZERO }
    }
}

#[derive(Default)]
struct Plan {
    queue: VecDeque<Answer>,
    default: Option<Answer>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = Receiver { url, hits: Arc::default(), plan: Arc::default() };
        let handler = receiver.clone();
        let router = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let handler = handler.clone();
            async move {
                let answer = {
                    let mut plan = handler.plan.lock().unwrap();
                    plan.queue.pop_front().or(plan.default).unwrap_or(Answer::status(200))
                };
                let hit = Hit { at: Instant::now(), headers, body, answered: answer.status };
                handler.hits.lock().unwrap().push(hit);
                tokio::time::sleep(answer.delay).await;
                let mut response = StatusCode::from_u16(answer.status).unwrap().into_response();
                if let Some(seconds) = answer.retry_after {
                    response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    /// Answers these, in order, before the default.
    pub fn answer_next(&self, answers: &[Answer]) {
        self.plan.lock().unwrap().queue.extend(answers.iter().copied());
    }

    pub fn answer_always(&self, answer: Answer) {
        self.plan.lock().unwrap().default = Some(answer);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until a request satisfies `done`; returns all requests so far.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "webhook never satisfied the test; got {:?}",
                hits.iter().map(|h| String::from_utf8_lossy(&h.body).into_owned()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The latest status the app accepted (a 2xx answer) for this uid.
    pub fn last_status_of(hits: &[Hit], uid: &str) -> Option<String> {
        hits.iter()
            .filter(|h| (200..300).contains(&h.answered))
            .flat_map(|h| h.pairs())
            .filter(|(u, _)| u == uid)
            .map(|(_, s)| s)
            .last()
    }
}

/// A stub resolver for webhook hosts: each name resolves to what the test last said, and every
/// lookup is recorded, to play DNS tricks (rebinding) without any real DNS.
#[derive(Default)]
pub struct StubResolver {
    names: Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>,
    asked: Mutex<Vec<String>>,
}

impl StubResolver {
    /// From now on `name` resolves to `addrs`.
    pub fn set(&self, name: &str, addrs: &[&str]) {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        self.names.lock().unwrap().insert(name.to_owned(), addrs);
    }

    /// The names looked up so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl super::service::Lookup for StubResolver {
    fn lookup(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>>
    {
        self.asked.lock().unwrap().push(host.to_owned());
        let found = self.names.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// A loopback listener that counts every connection made to it: where nothing may connect.
pub struct Canary {
    pub port: u16,
    reached: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Canary {
    pub async fn start() -> Canary {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reached.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        Canary { port, reached }
    }

    /// Connections made to it so far.
    pub fn reached(&self) -> usize {
        self.reached.load(std::sync::atomic::Ordering::SeqCst)
    }
}
