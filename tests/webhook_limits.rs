//! The real HTTPS server on loopback under hostile load: idle connections (HTTP/1.1 keep-alive
//! and h2) are closed, the connection cap holds, stalled large bodies are shed with a fast 503,
//! and file descriptors and RSS stay bounded while a real AdmissionReview is still answered.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Webhook, client, data, runtime, start_webhook};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// VmRSS or VmHWM (the peak) of `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn connector(ca: &str, alpn: &[u8]) -> TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls(connector: &TlsConnector, addr: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Reads until the server closes the connection; how long that took from `since`.
async fn closed_after(stream: &mut TlsStream<TcpStream>, since: Instant) -> Duration {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => return Duration::MAX,
        }
    }
}

/// A plain-HTTP GET on the metrics listener.
async fn get(url: String) -> reqwest::Result<reqwest::Response> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url).await
}

async fn metrics(hook: &Webhook) -> String {
    get(hook.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

async fn ready(hook: &Webhook) -> u16 {
    get(hook.metrics_url("/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_ready(hook: &Webhook) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(hook).await != 200 {
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real AdmissionReview answered, and how long it took.
async fn review_answered(ca: &str, hook: &Webhook) -> Duration {
    let body = std::fs::read(data("reviews/workload-identity-inline.json")).unwrap();
    let start = Instant::now();
    let resp = client(&[ca])
        .post(hook.url())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#""allowed":true"#));
    start.elapsed()
}

const CAP: usize = 48;
const IDLE_SECONDS: u64 = 4;

#[test]
fn idle_connections_are_closed_and_the_connection_cap_holds() {
    let cap = CAP.to_string();
    let idle = IDLE_SECONDS.to_string();
    let (_dir, ca, hook) = start_webhook(&[
        "--max-connections",
        &cap,
        "--idle-timeout-seconds",
        &idle,
        "--tls-handshake-timeout-seconds",
        "2",
    ]);
    let pid = hook.child.id();
    runtime().block_on(async {
        wait_ready(&hook).await;
        review_answered(&ca, &hook).await;
        let (fds_before, rss_before) = (fds(pid), memory_kib(pid, "VmRSS:"));

        // 4 x CAP attackers, alternately HTTP/1.1 (one request, then idle keep-alive) and h2
        // (preface and SETTINGS, then nothing). Those past the cap are closed on accept.
        let h1 = connector(&ca, b"http/1.1");
        let h2 = connector(&ca, b"h2");
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..4 * CAP {
            let connector = if i % 2 == 0 { &h1 } else { &h2 };
            let Ok(mut stream) = tls(connector, &hook.addr).await else {
                refused += 1;
                continue;
            };
            let hello: &[u8] = if i % 2 == 0 {
                b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
            } else {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            };
            if stream.write_all(hello).await.is_err() {
                refused += 1;
                continue;
            }
            // A refused connection ends at once; an admitted one answers (400, or SETTINGS).
            let mut first = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut first)).await {
                Ok(Ok(n)) if n > 0 => held.push((stream, Instant::now())),
                _ => refused += 1,
            }
        }
        assert_eq!(held.len(), CAP, "admitted past the cap (refused {refused})");
        assert_eq!(refused, 3 * CAP);

        let text = metrics(&hook).await;
        assert_eq!(metric(&text, "keywire_connections_open "), CAP as f64);
        assert!(metric(&text, "keywire_connections_rejected_total ") >= (3 * CAP) as f64);
        assert_eq!(ready(&hook).await, 503, "ready while at the cap");
        let fds_held = fds(pid);
        let rss_held = memory_kib(pid, "VmRSS:");
        assert!(
            fds_held <= fds_before + CAP + 8,
            "fds {fds_before} -> {fds_held} with {CAP} held"
        );
        assert!(
            rss_held < rss_before + 32 * 1024,
            "RSS {rss_before} KiB -> {rss_held} KiB with {CAP} idle connections"
        );
        eprintln!(
            "held {CAP} idle connections: fds {fds_before} -> {fds_held}, RSS {rss_before} -> {rss_held} KiB"
        );

        // Every idle connection is closed by the server after the idle timeout, both protocols.
        let closes: Vec<_> = held
            .into_iter()
            .map(|(mut s, since)| tokio::spawn(async move { closed_after(&mut s, since).await }))
            .collect();
        for (i, close) in closes.into_iter().enumerate() {
            let after = close.await.unwrap();
            assert!(
                after >= Duration::from_secs(IDLE_SECONDS) - Duration::from_millis(600)
                    && after <= Duration::from_secs(IDLE_SECONDS + 3),
                "connection {i} closed after {after:?}"
            );
        }
        let text = metrics(&hook).await;
        assert_eq!(metric(&text, "keywire_connections_open "), 0.0);
        assert!(metric(&text, "keywire_connections_closed_idle_total ") >= CAP as f64);
        assert_eq!(ready(&hook).await, 200, "ready again below the cap");
        let answered = review_answered(&ca, &hook).await;
        assert!(answered < Duration::from_secs(2), "answered in {answered:?}");
        let fds_after = fds(pid);
        assert!(fds_after <= fds_before + 2, "fds {fds_before} -> {fds_after}");
    });
    let logs = hook.drain_logs().join("\n");
    assert!(logs.contains("connection cap reached"), "{logs}");
    assert_eq!(
        logs.matches("connection cap reached").count(),
        1,
        "logged once per state change"
    );
    assert!(logs.contains("below the connection cap again"), "{logs}");
}

#[test]
fn a_silent_tls_handshake_is_cut_off() {
    let (_dir, _ca, hook) = start_webhook(&["--tls-handshake-timeout-seconds", "1"]);
    runtime().block_on(async {
        let mut tcp = TcpStream::connect(&hook.addr).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        let text = metrics(&hook).await;
        assert!(metric(&text, "keywire_tls_handshake_failures_total ") >= 1.0);
    });
}

/// What a body-sending client saw: the status and how long after its headers it came.
#[derive(Debug)]
struct Seen {
    status: u16,
    after: Duration,
    retry_after: bool,
}

/// Sends headers for a body of `length` bytes (chunked when `chunked`), then the body but for
/// its last KiB, then stalls until the server answers.
async fn stalled_body(connector: TlsConnector, addr: String, length: usize, chunked: bool) -> Seen {
    let mut stream = tls(&connector, &addr).await.unwrap();
    let head = if chunked {
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n")
    };
    let start = Instant::now();
    let (mut reader, mut writer) = tokio::io::split(&mut stream);
    let (done, sent_all) = tokio::sync::oneshot::channel::<()>();
    let send = async {
        tokio::select! {
            // A write fails once the server has answered and closed: the answer is still read.
            _ = async {
                let _ = send_then_stall(&mut writer, &head, length, chunked).await;
                std::future::pending::<()>().await
            } => {}
            _ = sent_all => {}
        }
    };
    let receive = async {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        drop(done);
        got
    };
    let response = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::join!(send, receive).1
    })
    .await
    .unwrap_or_default();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    Seen {
        status: text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        after: start.elapsed(),
        retry_after: text.contains("\r\nretry-after: 1\r\n"),
    }
}

async fn send_then_stall(
    writer: &mut (impl AsyncWriteExt + Unpin),
    head: &str,
    length: usize,
    chunked: bool,
) -> std::io::Result<()> {
    writer.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent + chunk.len() < length - 1024 {
        if chunked {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        } else {
            writer.write_all(&chunk).await?;
        }
        sent += chunk.len();
    }
    writer.flush().await?;
    // Stall: never send the rest.
    std::future::pending::<()>().await;
    Ok(())
}

#[test]
fn stalled_large_bodies_are_shed_with_a_fast_503_and_memory_stays_bounded() {
    const CLIENTS: usize = 80;
    const LENGTH: usize = 4 * 1024 * 1024 - 4096;
    let (_dir, ca, hook) = start_webhook(&[
        "--max-body-bytes",
        "4194304",
        "--body-budget-bytes",
        "16777216",
        "--body-read-timeout-seconds",
        "3",
    ]);
    let pid = hook.child.id();
    runtime().block_on(async {
        wait_ready(&hook).await;
        review_answered(&ca, &hook).await;
        let rss_before = memory_kib(pid, "VmRSS:");
        let connector = connector(&ca, b"http/1.1");
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                tokio::spawn(stalled_body(
                    connector.clone(),
                    hook.addr.clone(),
                    LENGTH,
                    i % 2 == 1,
                ))
            })
            .collect();
        let mut seen = Vec::new();
        for c in clients {
            seen.push(c.await.unwrap());
        }
        let peak = memory_kib(pid, "VmHWM:");
        let shed: Vec<&Seen> = seen.iter().filter(|s| s.status == 503).collect();
        let timed_out = seen.iter().filter(|s| s.status == 408).count();
        assert_eq!(shed.len() + timed_out, CLIENTS, "{seen:?}");
        // At most 16 MiB / 4 MiB bodies are read at once; every other client is shed.
        assert!(shed.len() >= CLIENTS - 8, "{seen:?}");
        assert!(shed.iter().all(|s| s.retry_after), "{seen:?}");
        // Declared bodies are refused on their headers, before their bytes are read.
        let slowest_declared = seen
            .iter()
            .step_by(2)
            .filter(|s| s.status == 503)
            .map(|s| s.after)
            .max()
            .unwrap();
        assert!(slowest_declared < Duration::from_secs(2), "{seen:?}");
        assert!(
            seen.iter().all(|s| s.after < Duration::from_secs(6)),
            "{seen:?}"
        );
        eprintln!(
            "{CLIENTS} stalled ~4 MiB bodies: {} shed with 503, {timed_out} cut off with 408; \
             RSS {rss_before} KiB before, peak {peak} KiB",
            shed.len()
        );
        assert!(
            peak < rss_before + 96 * 1024,
            "RSS {rss_before} KiB -> peak {peak} KiB"
        );
        let text = metrics(&hook).await;
        assert!(
            metric(
                &text,
                "keywire_requests_shed_total{reason=\"body_budget\"} "
            ) >= (CLIENTS - 8) as f64
        );
        assert_eq!(metric(&text, "keywire_body_bytes_buffered "), 0.0);
        let answered = review_answered(&ca, &hook).await;
        assert!(
            answered < Duration::from_secs(2),
            "answered in {answered:?}"
        );
    });
}
