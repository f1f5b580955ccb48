//! How a connection to a target is made, for hyper-util's client: TCP to an address
//! SSRF protection has checked (the resolver), directly or through the operator's proxy
//! (`HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`, read by hyper-util's matcher): a CONNECT
//! tunnel (hyper-util's `Tunnel`) for `https` targets, absolute-form requests for `http`
//! ones; then TLS by rustls (hyper-rustls), offering HTTP/2 and HTTP/1.1 by ALPN.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::{
    legacy::connect::{Connected, Connection, HttpConnector, proxy::Tunnel},
    proxy::matcher::Matcher,
};
use tower_service::Service;

use super::resolver::CheckedDns;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Makes connections to targets.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector<CheckedDns>,
    /// For targets: HTTP/2 and HTTP/1.1 by ALPN.
    tls: Arc<rustls::ClientConfig>,
    /// For a proxy spoken to over TLS: HTTP/1.1 only (CONNECT).
    proxy_tls: Arc<rustls::ClientConfig>,
    proxies: Arc<Matcher>,
}

impl Connector {
    pub fn new(
        tcp: HttpConnector<CheckedDns>,
        tls: rustls::ClientConfig,
        proxies: Arc<Matcher>,
    ) -> Self {
        let mut for_targets = tls.clone();
        for_targets.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut for_proxies = tls;
        for_proxies.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            tcp,
            tls: Arc::new(for_targets),
            proxy_tls: Arc::new(for_proxies),
            proxies,
        }
    }
}

/// A connection, whichever way it was made.
pub struct Conn {
    io: Box<dyn Io>,
    /// An `http` target through a proxy: requests go in absolute form.
    proxied: bool,
}

trait Io: Read + Write + Connection + Unpin + Send {}
impl<T: Read + Write + Connection + Unpin + Send> Io for T {}

impl Service<http::Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let https = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
            match this.proxies.intercept(&dst) {
                None => {
                    let io = HttpsConnector::from((this.tcp, this.tls)).call(dst).await?;
                    Ok(Conn {
                        io: Box::new(io),
                        proxied: false,
                    })
                }
                Some(proxy) if https => {
                    let to_proxy = HttpsConnector::from((this.tcp, this.proxy_tls));
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), to_proxy);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    let io = HttpsConnector::from((tunnel, this.tls)).call(dst).await?;
                    Ok(Conn {
                        io: Box::new(io),
                        proxied: false,
                    })
                }
                Some(proxy) => {
                    let io = HttpsConnector::from((this.tcp, this.proxy_tls))
                        .call(proxy.uri().clone())
                        .await?;
                    Ok(Conn {
                        io: Box::new(io),
                        proxied: true,
                    })
                }
            }
        })
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = self.io.connected();
        if self.proxied {
            connected.proxy(true)
        } else {
            connected
        }
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }
}
