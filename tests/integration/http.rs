//! The HTTP server refuses what it does not serve: bodies, other methods, oversized and
//! malformed requests, and keeps serving afterwards.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Service, Topics};

/// Sends raw bytes and returns the status code of the answer (0 if none).
async fn raw(service: &Service, request: &[u8]) -> u16 {
    let address = service.http.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused() {
    let topics = Topics::create("http").await;
    let service = Service::start(&topics.env());
    service.wait_ready().await;

    let big_body = b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n";
    assert_eq!(raw(&service, big_body).await, 413);
    let other_method = b"DELETE /kpis HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&service, other_method).await, 405);
    let header = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "x".repeat(1 << 20)
    );
    assert_eq!(raw(&service, header.as_bytes()).await, 431);
    assert_eq!(raw(&service, b"\x16\x03\x01garbage\r\n\r\n").await, 400);
    let missing = b"GET /nothing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&service, missing).await, 404);

    assert_eq!(service.get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(service.get("/readyz").await.map(|r| r.0), Some(200));
}
