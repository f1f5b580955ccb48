//! The benchmark's own target server, shared by both systems so that the target never
//! limits a figure: plain hyper on a runtime of its own, answering `/ok` at once,
//! `/sleep/<ms>` after that long and `/fail/<percent>` with a 500 that often. It counts
//! calls and measures, from headers the benchmark puts in each job, how long after its
//! submission (`x-bench-sent-us`) and how long after its due time (`x-bench-due-us`) each
//! call arrived.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;

use crate::clock::now_us;

/// Header with the unix time in microseconds at which the job was submitted.
pub const SENT_HEADER: &str = "x-bench-sent-us";
/// Header with the unix time in microseconds at which the job was due.
pub const DUE_HEADER: &str = "x-bench-due-us";

/// What the target saw.
pub struct Stats {
    calls: AtomicU64,
    /// Calls that came before their due time: a scheduler bug, counted to be seen.
    early: AtomicU64,
    /// Submission to call, microseconds.
    latency: Mutex<Histogram<u64>>,
    /// Due time to call, microseconds (0 when early).
    lateness: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            early: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            lateness: Mutex::new(histogram()),
        }
    }
}

/// Microseconds from 1 µs to one hour at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn early(&self) -> u64 {
        self.early.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> Histogram<u64> {
        self.latency.lock().expect("lock").clone()
    }

    pub fn lateness(&self) -> Histogram<u64> {
        self.lateness.lock().expect("lock").clone()
    }

    /// Forgets everything, between scenarios.
    pub fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.early.store(0, Ordering::Relaxed);
        self.latency.lock().expect("lock").reset();
        self.lateness.lock().expect("lock").reset();
    }

    fn record(&self, request: &Request<Incoming>) {
        let now = now_us();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let at = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(sent) = at(SENT_HEADER) {
            let us = now.saturating_sub(sent).max(1);
            let _ = self.latency.lock().expect("lock").record(us);
        }
        // A schedule's occurrence (Courier's header): due at that time.
        let occurrence = request
            .headers()
            .get("x-courier-occurrence")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.timestamp_micros() as u64);
        if let Some(due) = at(DUE_HEADER).or(occurrence) {
            // Courier keeps due times in milliseconds: early only by a whole one.
            if now + 1000 <= due {
                self.early.fetch_add(1, Ordering::Relaxed);
            }
            let us = now.saturating_sub(due).max(1);
            let _ = self.lateness.lock().expect("lock").record(us);
        }
    }
}

/// A running target; it lives as long as the benchmark.
pub struct Target {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Target {
    /// Binds 127.0.0.1:0 and serves on a thread of its own.
    pub fn start() -> anyhow::Result<Self> {
        // A deep accept queue (the kernel caps it at net.core.somaxconn): 10,000 calls
        // connect within a second, and a dropped SYN is retried only after one.
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(65_535)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let served = stats.clone();
        std::thread::Builder::new()
            .name("bench-target".into())
            .spawn(move || {
                // Two threads: 10,000 connections arrive within a second, and the target
                // must not be what limits a figure.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("bench-target")
                    .enable_all()
                    .build()
                    .expect("target runtime");
                runtime.block_on(serve(listener, served));
            })?;
        Ok(Self { addr, stats })
    }

    /// The URL of `path` on this target.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve(listener: std::net::TcpListener, stats: Arc<Stats>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("target listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, stats.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    stats.record(&request);
    let path = request.uri().path().to_owned();
    // Read the whole body, as a real receiver would.
    let _ = request.into_body().collect().await;
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let status = match (
        parts.next(),
        parts.next().and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some("sleep"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK
        }
        (Some("fail"), Some(percent)) if rand_percent() < percent => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::OK,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    Ok(response)
}

/// A cheap pseudo-random number in 0..100 (the failure rate needs no better).
fn rand_percent() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);
    let mut x = STATE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x % 100
}
