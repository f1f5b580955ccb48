//! The load generator: HTTP/1.1 POSTs over kept-alive connections, each connection a task
//! of its own (plain hyper, so the generator costs little of the machine it shares).
//! Closed loop (each connection sends its next request when the last is answered), a
//! fixed rate, or a fixed list of requests.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;

use crate::target::histogram;

/// Where requests go, and the `Authorization` they carry.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub authorization: Option<String>,
}

/// Builds request `n`: its path and JSON body.
pub type MakeRequest = Arc<dyn Fn(u64) -> (String, Bytes) + Send + Sync>;

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Answers by status, and `0` for transport errors.
    pub statuses: BTreeMap<u16, u64>,
    /// Request latency in microseconds, 2xx only.
    pub latency: Option<Histogram<u64>>,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.ok += other.ok;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        match (&mut self.latency, other.latency) {
            (Some(mine), Some(theirs)) => mine.add(theirs).expect("same bounds"),
            (mine @ None, theirs) => *mine = theirs,
            _ => {}
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Answers that were not 2xx, transport errors included.
    pub fn failed(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// A latency percentile in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(quantile) as f64 / 1000.0)
    }
}

/// One kept-alive connection.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    async fn post(&mut self, endpoint: &Endpoint, path: &str, body: Bytes) -> anyhow::Result<u16> {
        self.sender.ready().await?;
        let mut request = Request::post(path)
            .header(hyper::header::HOST, endpoint.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &endpoint.authorization {
            request = request.header(hyper::header::AUTHORIZATION, auth);
        }
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// Sends one request on `conn` (opening it first if needed), recording it in `load`.
async fn send_one(
    conn: &mut Option<Conn>,
    endpoint: &Endpoint,
    (path, body): (String, Bytes),
    load: &mut Load,
) {
    let started = Instant::now();
    let result = async {
        if conn.is_none() {
            *conn = Some(Conn::open(endpoint.addr).await?);
        }
        conn.as_mut()
            .expect("opened")
            .post(endpoint, &path, body)
            .await
    }
    .await;
    match result {
        Ok(status) => {
            *load.statuses.entry(status).or_default() += 1;
            if (200..300).contains(&status) {
                load.ok += 1;
                let us = started.elapsed().as_micros().max(1) as u64;
                let _ = load.latency.get_or_insert_with(histogram).record(us);
            }
        }
        Err(e) => {
            *conn = None;
            *load.statuses.entry(0).or_default() += 1;
            load.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// `conns` connections, each sending as fast as it is answered, for `duration`.
pub async fn closed_loop(
    endpoint: &Endpoint,
    conns: usize,
    duration: Duration,
    make: MakeRequest,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (endpoint, make, next) = (endpoint.clone(), make.clone(), next.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut conn = None;
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    send_one(&mut conn, &endpoint, make(n), &mut load).await;
                }
                load
            })
        })
        .collect();
    gather(tasks, started).await
}

/// `rate` requests a second for `duration`, spread over `conns` connections, each
/// request sent at its planned time (or as soon as its connection is free).
pub async fn at_rate(
    endpoint: &Endpoint,
    conns: usize,
    rate: u64,
    duration: Duration,
    make: MakeRequest,
) -> Load {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let tasks: Vec<_> = (0..conns as u64)
        .map(|k| {
            let (endpoint, make) = (endpoint.clone(), make.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut conn = None;
                let mut n = k;
                while n < total {
                    tokio::time::sleep_until((started + interval * n as u32).into()).await;
                    send_one(&mut conn, &endpoint, make(n), &mut load).await;
                    n += conns as u64;
                }
                load
            })
        })
        .collect();
    gather(tasks, started).await
}

/// Sends `requests` over `conns` connections, printing progress under `label`.
pub async fn send_all(
    endpoint: &Endpoint,
    conns: usize,
    count: u64,
    make: MakeRequest,
    label: &str,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (endpoint, make, next, done) =
                (endpoint.clone(), make.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                let mut load = Load::default();
                let mut conn = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break load;
                    }
                    send_one(&mut conn, &endpoint, make(n), &mut load).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let progress = crate::progress::every_second(label.to_owned(), count, move || {
        done.load(Ordering::Relaxed)
    });
    let load = gather(tasks, started).await;
    progress.abort();
    load
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Load>>, started: Instant) -> Load {
    let mut load = Load::default();
    for task in tasks {
        load.merge(task.await.expect("load task"));
    }
    load.elapsed = started.elapsed();
    load
}
