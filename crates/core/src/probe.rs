//! The container health checks' probe: `courier-api healthcheck` and `courier-worker
//! healthcheck` ask their own process over loopback, so an image needs no curl.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `GET path` on 127.0.0.1:`port` answers 200 within `timeout`.
pub async fn answers_ok(port: u16, path: &str, timeout: std::time::Duration) -> bool {
    let ask = async {
        let addr = ("127.0.0.1", port);
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(true)))
}
