//! The HTTP server refuses what it does not serve (bodies, other methods, oversized and
//! malformed requests), bounds its connections and how long each may take, serves TLS and
//! basic authentication, and keeps its probes answering through floods of connections.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::harness::{Service, Topics, eventually, free_port, now_ms};

/// Longest a single exchange may take before the test fails.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

fn address(service: &Service) -> &str {
    service.http.trim_start_matches("http://")
}

/// Writes `request` on `stream` and reads until the server closes (or resets) it.
async fn talk(mut stream: impl AsyncRead + AsyncWrite + Unpin, request: &[u8]) -> String {
    // The server may answer and close before it has read everything; that is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(EXCHANGE_LIMIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends raw bytes to `address` and returns the answer (empty if it cannot connect).
async fn exchange(address: &str, request: &[u8]) -> String {
    match TcpStream::connect(address).await {
        Ok(stream) => talk(stream, request).await,
        Err(_) => String::new(),
    }
}

/// The status code of an answer, 0 if there is none.
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Sends raw bytes and returns the status code of the answer (0 if none).
async fn raw(service: &Service, request: &[u8]) -> u16 {
    status(&exchange(address(service), request).await)
}

/// A service with `settings` as `KPI_STREAM_HTTP__<KEY>` overrides and a probe listener,
/// once the probe listener answers; with the probe listener's address.
async fn start(test: &str, settings: &[(&str, &str)]) -> (Service, String) {
    let topics = Topics::create(test).await;
    let probes = format!("127.0.0.1:{}", free_port());
    let mut env = topics.env();
    env.push(("KPI_STREAM_HTTP__PROBE_LISTEN".into(), probes.clone()));
    for (key, value) in settings {
        env.push((format!("KPI_STREAM_HTTP__{key}"), (*value).to_owned()));
    }
    let service = Service::start(&env);
    eventually("the probe listener", Duration::from_secs(30), async || {
        (status(&exchange(&probes, &get("/healthz")).await) == 200).then_some(())
    })
    .await;
    (service, probes)
}

/// Connections the main listener refused at its limit.
const REFUSED: &str = "kpi_http_connections_refused_total{listener=\"main\"}";

/// The exposition of /metrics, once the main listener has room for the request.
async fn scrape(service: &Service) -> String {
    eventually("room for /metrics", EXCHANGE_LIMIT, async || {
        service.get("/metrics").await.map(|(_, text)| text)
    })
    .await
}

/// The value of one sample line (`name{labels}`) of an exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_refused_even_when_chunked() {
    let (service, _) = start("http-body", &[]).await;
    let chunked = format!(
        "GET /kpis HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "a".repeat(2048)
    );
    let small = b"GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello";
    let empty_chunked =
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for request in [chunked.as_bytes(), small, empty_chunked] {
        // The answer closes the connection: `talk` would fail the test otherwise.
        let answer = exchange(address(&service), request).await;
        assert_eq!(status(&answer), 413, "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    let no_body =
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&service, no_body).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_the_connection_limit_is_reached() {
    let settings = [("MAX_CONNECTIONS", "10"), ("HEADER_READ_TIMEOUT", "60s")];
    let (service, probes) = start("http-limit", &settings).await;
    eventually("readiness", Duration::from_secs(90), async || {
        (status(&exchange(&probes, &get("/readyz")).await) == 200).then_some(())
    })
    .await;
    let main = address(&service);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(main).await.unwrap());
    }
    // The held connections are accepted in the background: soon the next one is refused.
    let refused = eventually("a refusal at the limit", EXCHANGE_LIMIT, async || {
        let answer = exchange(main, &get("/healthz")).await;
        (status(&answer) == 503).then_some(answer)
    })
    .await;
    assert!(refused.ends_with("connection limit reached\n"), "{refused}");

    for path in ["/healthz", "/readyz"] {
        let asked = Instant::now();
        let answer = exchange(&probes, &get(path)).await;
        assert_eq!(status(&answer), 200, "{answer}");
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
    // The probe listener serves the probes only, and keeps no connection alive.
    assert_eq!(status(&exchange(&probes, &get("/metrics")).await), 404);
    let kept = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    assert!(exchange(&probes, kept).await.contains("connection: close"));

    drop(held);
    let refused = sample(&scrape(&service).await, REFUSED);
    assert!(refused >= Some(1.0), "{refused:?}");
}

/// Reads one answer of a kept-alive connection: the head, then `Content-Length` bytes.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout(EXCHANGE_LIMIT, stream.read(&mut buf)).await;
        match read.expect("an answer in time") {
            Ok(0) | Err(_) => return text,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until the server closes `stream` and returns how long that took.
async fn time_to_close(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0; 1024];
    loop {
        match tokio::time::timeout(EXCHANGE_LIMIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_close_after_the_idle_timeout() {
    let settings = [("HEADER_READ_TIMEOUT", "1s"), ("IDLE_TIMEOUT", "3s")];
    let (service, _) = start("http-idle", &settings).await;
    let main = address(&service);
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut kept = TcpStream::connect(main).await.unwrap();
    kept.write_all(request).await.unwrap();
    assert_eq!(status(&read_answer(&mut kept).await), 200);
    // Idle for longer than the header-read timeout but within the idle timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kept.write_all(request).await.unwrap();
    assert_eq!(status(&read_answer(&mut kept).await), 200);
    let idle = time_to_close(&mut kept).await;
    assert!(
        idle > Duration::from_millis(2800) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
    // A connection that never sends a request has the header-read timeout.
    let mut silent = TcpStream::connect(main).await.unwrap();
    let waited = time_to_close(&mut silent).await;
    assert!(
        waited > Duration::from_millis(800) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let text = scrape(&service).await;
    for timeout in ["header_read", "idle"] {
        let series = format!("kpi_http_timeouts_total{{listener=\"main\",timeout=\"{timeout}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series}");
    }
}

/// Opens a connection to `address` and keeps it until the server closes it: sending
/// nothing, or (`slow`) a request head one byte every 250 ms that never ends. Returns how
/// long the server kept it, or an error if it was still open after `limit`.
async fn hold(
    address: String,
    connecting: Arc<Semaphore>,
    slow: bool,
    limit: Duration,
) -> Result<Duration, String> {
    let stream = {
        let _turn = connecting.acquire().await.unwrap();
        TcpStream::connect(&address)
            .await
            .map_err(|e| format!("connect: {e}"))?
    };
    let opened = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: "
        .iter()
        .copied()
        .chain(std::iter::repeat(b'a'));
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut buf = [0; 512];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(opened.elapsed()),
                // The 503 of a refused connection, before its end.
                Ok(_) => {}
            },
            _ = ticks.tick(), if slow => {
                let byte = head.next().unwrap_or(b'a');
                if writer.write_all(&[byte]).await.is_err() {
                    return Ok(opened.elapsed());
                }
            }
            () = &mut deadline => return Err(format!("still open after {limit:?}")),
        }
    }
}

/// Asks for /healthz at `address` every 100 ms until `done`, from a thread of its own so
/// that the flood's tasks do not delay it: the statuses and the times.
fn probe_until(address: String, done: Arc<AtomicBool>) -> Vec<(u16, Duration)> {
    use std::io::{Read, Write};
    let mut samples = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let mut answer = String::new();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            stream.set_read_timeout(Some(EXCHANGE_LIMIT)).unwrap();
            let _ = stream.write_all(&get("/healthz"));
            let _ = stream.read_to_string(&mut answer);
        }
        samples.push((status(&answer), asked.elapsed()));
        std::thread::sleep(Duration::from_millis(100));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_floods_leave_the_probes_answering() {
    const IDLE: usize = 20_000;
    const SLOW: usize = 2_000;
    const MAX_CONNECTIONS: usize = 1_000;
    let header_read = Duration::from_secs(3);
    // Timers and the two shared cores may run late; nothing may stay twice as long.
    let close_limit = header_read + Duration::from_secs(2);
    let settings = [("MAX_CONNECTIONS", "1000"), ("HEADER_READ_TIMEOUT", "3s")];
    let (service, probes) = start("http-flood", &settings).await;
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        std::thread::spawn(move || probe_until(probes, done))
    };

    // The client closes its side once the server has closed it, so that the test needs
    // file descriptors for the connections the server keeps, not for all of them. At most
    // 10,000 new connections a second: faster than that, on two shared cores, the server's
    // backlog may overflow, and the kernel leaves the client believing in a connection
    // the server never sees.
    let connecting = Arc::new(Semaphore::new(200));
    let mut flood = Vec::new();
    for i in 0..SLOW + IDLE {
        if i % 1_000 == 999 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let address = address(&service).to_owned();
        // One in eleven (SLOW of them) is slow, so that both kinds are held at the limit.
        let slow = i % 11 == 0;
        let held = hold(address, connecting.clone(), slow, close_limit);
        flood.push(tokio::spawn(async move { (slow, held.await) }));
    }
    let mut kept = Vec::new();
    for connection in flood {
        let (slow, held) = connection.await.unwrap();
        kept.push((slow, held.unwrap()));
    }
    done.store(true, Ordering::Relaxed);
    let samples = prober.join().unwrap();

    // A refused connection is closed within milliseconds, a held one at the timeout (from
    // its accept, which the client sees a little later or earlier than its connect).
    let held = |slow| {
        let held = kept
            .iter()
            .filter(|(s, k)| *s == slow && *k >= header_read / 2);
        held.count()
    };
    let (held_slow, held_idle) = (held(true), held(false));
    assert!(held_slow + held_idle >= MAX_CONNECTIONS);
    assert!(
        held_slow > 0 && held_idle > 0,
        "{held_slow} slow, {held_idle} idle held"
    );
    let longest = kept.iter().map(|(_, k)| *k).max();
    assert!(longest < Some(close_limit), "{longest:?}");
    assert!(samples.len() >= 5, "{samples:?}");
    for (status, took) in &samples {
        assert_eq!(*status, 200);
        assert!(*took < Duration::from_secs(1), "/healthz took {took:?}");
    }
    let slowest = samples.iter().map(|s| s.1).max();
    println!(
        "{} connections; held until the header-read timeout: {held_slow} slow, {held_idle} \
         idle; the longest open {longest:?}; {} probes, the slowest {slowest:?}",
        kept.len(),
        samples.len()
    );
    // Every connection was either refused at once or closed by the header-read timeout.
    let text = scrape(&service).await;
    let refused = sample(&text, REFUSED);
    let timeouts = "kpi_http_timeouts_total{listener=\"main\",timeout=\"header_read\"}";
    let timed_out = sample(&text, timeouts);
    assert_eq!(
        refused.zip(timed_out).map(|(r, t)| r + t),
        Some((SLOW + IDLE) as f64),
        "refused {refused:?}, timed out {timed_out:?}"
    );
}

/// Resident memory of a process, in kB.
fn resident_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens a connection, asks for /healthz with keep-alive and returns the status, with the
/// connection if it stays open.
async fn keep_alive(address: String, connecting: Arc<Semaphore>) -> (u16, Option<TcpStream>) {
    let _turn = connecting.acquire().await.unwrap();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let code = status(&read_answer(&mut stream).await);
    (code, (code == 200).then_some(stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keep_alive_connections_take_the_memory_of_the_limit() {
    // The default limit, 256 connections; the idle timeout keeps them through the test.
    let (service, _) = start("http-memory", &[("IDLE_TIMEOUT", "600s")]).await;
    let before = resident_kb(service.pid());
    let connecting = Arc::new(Semaphore::new(200));
    let attempts: Vec<_> = (0..10_000)
        .map(|_| tokio::spawn(keep_alive(address(&service).to_owned(), connecting.clone())))
        .collect();
    let mut kept = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            (200, Some(stream)) => kept.push(stream),
            (503, _) => refused += 1,
            (code, _) => panic!("status {code}"),
        }
    }
    assert_eq!((kept.len(), refused), (256, 10_000 - 256));
    let open = resident_kb(service.pid());
    drop(kept);
    // The scrape itself is the one open connection left.
    eventually("the connections closed", EXCHANGE_LIMIT, async || {
        let (_, text) = service.get("/metrics").await?;
        (sample(&text, "kpi_http_connections{listener=\"main\"}") == Some(1.0)).then_some(())
    })
    .await;
    let after = resident_kb(service.pid());
    println!("resident memory: {before} kB before, {open} kB with 256 kept, {after} kB after");
    assert!(open < before + 16 * 1024, "{before} kB -> {open} kB");
}

/// A self-signed certificate for 127.0.0.1 written to `dir`, replacing any there (each
/// file by a rename, as a Secret's update does); its DER for the client to trust.
fn write_certificate(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    for (name, pem) in [
        ("key.pem", generated.signing_key.serialize_pem()),
        ("cert.pem", generated.cert.pem()),
    ] {
        let next = dir.join(format!("{name}.next"));
        std::fs::write(&next, pem).unwrap();
        std::fs::rename(&next, dir.join(name)).unwrap();
    }
    generated.cert.der().clone()
}

/// A TLS client that trusts `certificate` alone.
fn client(certificate: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection checks the certificate: a resumed session would not show it.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends `request` over TLS; `None` if the handshake fails.
async fn https(
    client: &tokio_rustls::TlsConnector,
    address: &str,
    request: &[u8],
) -> Option<String> {
    let tcp = TcpStream::connect(address).await.ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let stream = client.connect(name, tcp).await.ok()?;
    Some(talk(stream, request).await)
}

fn authorized_get(path: &str, user: &str, password: &str) -> Vec<u8> {
    use base64::Engine as _;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_basic_auth_guard_every_endpoint() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("kpi-http-tls-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_certificate(&dir);
    let users = format!("{{prometheus=\"{}\"}}", bcrypt::hash("right", 4).unwrap());
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let settings = [
        ("TLS_CERT_FILE", cert.to_str().unwrap()),
        ("TLS_KEY_FILE", key.to_str().unwrap()),
        ("BASIC_AUTH_USERS", users.as_str()),
    ];
    let (service, probes) = start("http-tls", &settings).await;
    let main = address(&service);
    let tls = client(first);

    let anonymous = https(&tls, main, &get("/metrics")).await.unwrap();
    assert_eq!(status(&anonymous), 401, "{anonymous}");
    assert!(anonymous.contains("www-authenticate: Basic"), "{anonymous}");
    for (user, password) in [
        ("prometheus", "wrong"),
        ("prometheus", "wrong"),
        ("nobody", "right"),
    ] {
        let answer = https(&tls, main, &authorized_get("/kpis", user, password)).await;
        assert_eq!(
            answer.as_deref().map(status),
            Some(401),
            "{user}:{password}"
        );
    }
    // Every endpoint of the main listener needs the credentials, the probes included.
    let answer = https(&tls, main, &get("/healthz")).await;
    assert_eq!(answer.as_deref().map(status), Some(401));
    let scrape = authorized_get("/metrics", "prometheus", "right");
    for _ in 0..3 {
        let answer = https(&tls, main, &scrape).await.unwrap();
        assert_eq!(status(&answer), 200);
    }
    // Plain HTTP gets no answer from the TLS listener; the probe listener stays plain.
    assert_eq!(raw(&service, &get("/healthz")).await, 0);
    assert_eq!(status(&exchange(&probes, &get("/healthz")).await), 200);
    // bcrypt ran once per distinct credential: the right one, the wrong password, the
    // unknown user.
    let text = https(&tls, main, &scrape).await.unwrap();
    let verifications = |result: &str| {
        let series = format!("kpi_http_password_verifications_total{{result=\"{result}\"}}");
        sample(&text, &series)
    };
    assert_eq!(verifications("admitted"), Some(1.0), "{text}");
    assert_eq!(verifications("refused"), Some(2.0));

    // A renewed certificate is served without a restart.
    let renewed = client(write_certificate(&dir));
    eventually("the renewed certificate", EXCHANGE_LIMIT, async || {
        https(&renewed, main, &scrape)
            .await
            .filter(|a| status(a) == 200)
    })
    .await;
    assert!(https(&tls, main, &scrape).await.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
