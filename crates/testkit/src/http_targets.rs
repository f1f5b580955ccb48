//! Targets that behave like real servers Courier did not write: one that closes every
//! connection right after its answer (valid HTTP/1.1, no `Connection: close`), one with
//! a short keep-alive timeout, one that trickles its answer; an HTTPS server that speaks
//! only HTTP/2; and a forward proxy.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::response::IntoResponse;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How a [`RawTarget`] treats its connections.
#[derive(Debug, Clone, Copy)]
pub enum RawMode {
    /// Answers `200 ok` and closes the connection at once, without saying so.
    CloseAfterAnswer,
    /// Answers `200 ok` and keeps the connection for this long waiting for the next
    /// request, then closes it (a server's keep-alive timeout).
    KeepAlive(Duration),
    /// Sends its head (`Content-Length: 100`), then one byte of body per this long.
    Trickle(Duration),
}

/// A hand-written HTTP/1.1 server on 127.0.0.1:0; stops when dropped.
pub struct RawTarget {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl RawTarget {
    pub async fn start(mode: RawMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(stream, mode, counter.clone()));
            }
        });
        Self {
            addr,
            requests,
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve_raw(mut stream: TcpStream, mode: RawMode, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let wait = match mode {
            RawMode::KeepAlive(idle) => idle,
            _ => Duration::from_secs(60),
        };
        match tokio::time::timeout(wait, read_request(&mut stream, &mut buf)).await {
            Ok(Some(())) => {}
            _ => return,
        }
        requests.fetch_add(1, Ordering::SeqCst);
        match mode {
            RawMode::CloseAfterAnswer => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                return;
            }
            RawMode::KeepAlive(_) => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
            RawMode::Trickle(every) => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                for _ in 0..100 {
                    tokio::time::sleep(every).await;
                    if stream.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Reads one request (head, then a `Content-Length` body) into `buf`, leaving what
/// follows it there; `None` at the end of the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                if !fill(stream, buf).await {
                    return None;
                }
            }
            buf.drain(..total);
            return Some(());
        }
        if !fill(stream, buf).await {
            return None;
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// An HTTPS server on 127.0.0.1:0 that offers only `h2` by ALPN and speaks only
/// HTTP/2; it records the protocol version of each request.
pub struct H2Target {
    pub addr: SocketAddr,
    versions: Arc<Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl H2Target {
    /// Serves with the certificate and key in the PEM files at `cert` and `key`.
    pub async fn start(cert: &str, key: &str) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("certificate file")
            .collect::<Result<_, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(key).expect("key file");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let versions = Arc::new(Mutex::new(Vec::new()));
        let seen = versions.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            seen.lock().unwrap().push(format!("{:?}", req.version()));
                            async {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self {
            addr,
            versions,
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The protocol version of every request received (`"HTTP/2.0"`).
    pub fn versions(&self) -> Vec<String> {
        self.versions.lock().unwrap().clone()
    }
}

/// A forward proxy for plain HTTP on 127.0.0.1:0: takes absolute-form requests, sends
/// them on to their target, and counts them.
pub struct ForwardProxy {
    pub addr: SocketAddr,
    forwarded: Arc<AtomicUsize>,
    _server: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    pub async fn start() -> Self {
        let forwarded = Arc::new(AtomicUsize::new(0));
        let counter = forwarded.clone();
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("proxy client");
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: bytes::Bytes| {
                let (client, counter) = (client.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut request = client.request(method, uri.to_string()).body(body);
                    for (name, value) in &headers {
                        if !matches!(name.as_str(), "host" | "proxy-connection" | "connection") {
                            request = request.header(name, value);
                        }
                    }
                    match request.send().await {
                        Ok(answer) => {
                            let status = answer.status();
                            let body = answer.bytes().await.unwrap_or_default();
                            (status, body).into_response()
                        }
                        Err(e) => {
                            (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response()
                        }
                    }
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self {
            addr,
            forwarded,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests forwarded so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}
