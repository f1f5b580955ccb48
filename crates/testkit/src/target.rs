//! A real HTTP server on 127.0.0.1:0 that records every request and answers as a test
//! scripts it: per path, a sequence of replies (the last one repeats).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

/// One request as the target saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl Received {
    pub fn job_id(&self) -> Option<String> {
        self.header("x-courier-job-id")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: vec![],
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.into();
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Recorder {
    received: Mutex<Vec<Received>>,
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Per path: requests being answered now, and the most there ever were at once.
    concurrency: Mutex<HashMap<String, (usize, usize)>>,
}

/// Counts a request as in progress on its path until dropped (a request whose client
/// goes away is dropped too).
struct InProgress {
    recorder: Arc<Recorder>,
    path: String,
}

impl InProgress {
    fn start(recorder: &Arc<Recorder>, path: &str) -> Self {
        let mut all = recorder.concurrency.lock().unwrap();
        let (now, most) = all.entry(path.to_owned()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        Self {
            recorder: recorder.clone(),
            path: path.to_owned(),
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Some((now, _)) = self
            .recorder
            .concurrency
            .lock()
            .unwrap()
            .get_mut(&self.path)
        {
            *now -= 1;
        }
    }
}

/// A recording target server; stops when dropped.
pub struct Target {
    pub addr: SocketAddr,
    recorder: Arc<Recorder>,
    _server: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Starts a target that answers 200 to everything until told otherwise.
    pub async fn start() -> Self {
        let recorder = Arc::new(Recorder::default());
        let app = Router::new().fallback(handle).with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind target");
        let addr = listener.local_addr().expect("target address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            addr,
            recorder,
            _server: server,
        }
    }

    /// The URL of `path` on this target.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers requests to `path` with `replies` in order; the last one repeats.
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.recorder
            .script
            .lock()
            .unwrap()
            .insert(path.into(), replies.into());
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.recorder.received.lock().unwrap().clone()
    }

    /// Requests received for `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.recorder.received.lock().unwrap().len()
    }

    /// The most requests to `path` that were being answered at the same time.
    pub fn max_concurrent(&self, path: &str) -> usize {
        let all = self.recorder.concurrency.lock().unwrap();
        all.get(path).map_or(0, |(_, most)| *most)
    }

    /// Requests to `path` being answered now.
    pub fn concurrent(&self, path: &str) -> usize {
        let all = self.recorder.concurrency.lock().unwrap();
        all.get(path).map_or(0, |(now, _)| *now)
    }
}

async fn handle(
    State(recorder): State<Arc<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let _in_progress = InProgress::start(&recorder, &path);
    recorder.received.lock().unwrap().push(Received {
        method,
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
        received_at: chrono::Utc::now(),
    });
    let reply = {
        let mut script = recorder.script.lock().unwrap();
        match script.get_mut(&path) {
            Some(replies) if replies.len() > 1 => replies.pop_front(),
            Some(replies) => replies.front().cloned(),
            None => None,
        }
    }
    .unwrap_or_else(|| Reply::status(200).body("ok"));
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}
