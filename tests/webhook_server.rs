//! The real HTTPS server on loopback, with `keywire certs` material and a client that trusts only that CA.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Webhook, client, data, make_certs, run, runtime, start_webhook};

fn reviews() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data("reviews"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "review fixtures missing");
    files
}

#[test]
fn webhook_answers_byte_for_byte_as_keywire_review() {
    let (_dir, ca, hook) = start_webhook(&[]);
    let http = client(&[&ca]);
    let rt = runtime();
    for file in reviews() {
        let body = std::fs::read(&file).unwrap();
        let served = rt.block_on(async {
            let resp = http
                .post(hook.url())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{}", file.display());
            resp.bytes().await.unwrap()
        });
        let offline = run(
            &[
                "review",
                "--cluster-state",
                data("cluster-state.yaml").to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            None,
        );
        assert!(offline.status.success());
        let mut expected = offline.stdout.clone();
        assert_eq!(expected.pop(), Some(b'\n'));
        assert_eq!(served.as_ref(), expected.as_slice(), "{}", file.display());
    }
    // The logs carry the decision, never the object (no image names, no env values).
    let logs = hook.drain_logs().join("\n");
    assert!(logs.contains(r#""outcome":"patched""#), "{logs}");
    assert!(
        !logs.contains("nginx") && !logs.contains("\"info\""),
        "object content leaked into logs: {logs}"
    );
}

#[test]
fn health_readiness_and_metrics() {
    let (_dir, ca, hook) = start_webhook(&[]);
    let rt = runtime();
    rt.block_on(async {
        let plain = reqwest::Client::new();
        assert_eq!(
            plain
                .get(hook.metrics_url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while plain
            .get(hook.metrics_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            != 200
        {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let http = client(&[&ca]);
        let body = std::fs::read(data("reviews/denied-token-expiration.json")).unwrap();
        assert_eq!(
            http.post(hook.url())
                .body(body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let text = plain
            .get(hook.metrics_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(
                r#"keywire_admission_requests_total{endpoint="mutate",outcome="denied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keywire_admission_duration_seconds_count{endpoint="mutate",outcome="denied"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("keywire_ready 1"), "{text}");
        // The webhook port speaks only TLS.
        let plain_to_tls = plain
            .post(format!("http://{}/mutate", hook.addr))
            .body("{}")
            .send()
            .await;
        assert!(plain_to_tls.is_err() || !plain_to_tls.unwrap().status().is_success());
    });
}

#[test]
fn garbage_and_oversize_bodies_get_4xx_and_the_server_keeps_serving() {
    let (_dir, ca, hook) = start_webhook(&["--max-body-bytes", "65536"]);
    let http = client(&[&ca]);
    runtime().block_on(async {
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"not json at all".to_vec(), 400, "body is not JSON"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
                400,
                "AdmissionReview has no request",
            ),
            (
                br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(),
                400,
                "unsupported AdmissionReview apiVersion",
            ),
            (vec![0xff, 0xfe, 0x00], 400, "body is not JSON"),
            (
                vec![b'{'; 200_000],
                413,
                "request body is larger than 65536 bytes",
            ),
            (
                vec![b'{'; 65_537],
                413,
                "request body is larger than 65536 bytes",
            ),
        ];
        for (body, status, text) in cases {
            let resp = http.post(hook.url()).body(body).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), status);
            assert!(resp.text().await.unwrap().contains(text));
        }
        let ok = std::fs::read(data("reviews/workload-identity-inline.json")).unwrap();
        let resp = http.post(hook.url()).body(ok).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.text().await.unwrap().contains(r#""allowed":true"#));
    });
}

/// Lays out certificates as kubelet does for a Secret volume: files are symlinks into `..data`,
/// which is itself a symlink swapped atomically to a new timestamped directory.
fn kubelet_write(volume: &Path, generation: u32, source: &Path) {
    let stamp = volume.join(format!("..2026_11_23_{generation:04}"));
    std::fs::create_dir_all(&stamp).unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(source.join(f), stamp.join(f)).unwrap();
    }
    let tmp = volume.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(stamp.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, volume.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        let link = volume.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(f), &link).unwrap();
        }
    }
}

#[test]
fn certificate_rotation_while_serving_fails_no_request() {
    let work = tempfile::tempdir().unwrap();
    let (first, second, volume) = (
        work.path().join("first"),
        work.path().join("second"),
        work.path().join("volume"),
    );
    let ca1 = make_certs(&first);
    let ca2 = make_certs(&second);
    std::fs::create_dir_all(&volume).unwrap();
    kubelet_write(&volume, 1, &first);
    let hook = Webhook::start(
        &volume.join("tls.crt"),
        &volume.join("tls.key"),
        &data("cluster-state.yaml"),
        &[],
    );
    let body = std::fs::read(data("reviews/workload-identity-inline.json")).unwrap();

    runtime().block_on(async {
        // During the overlap the apiserver's caBundle holds both CAs, as keywire's rotation does.
        let both = client(&[&ca1, &ca2]);
        let only_old = client(&[&ca1]);
        let only_new = client(&[&ca2]);
        assert_eq!(
            only_old
                .post(hook.url())
                .body(body.clone())
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        assert!(
            only_new
                .post(hook.url())
                .body(body.clone())
                .send()
                .await
                .is_err(),
            "new CA trusted before rotation"
        );

        let failures = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (client, url, body, failures, done) = (
                both.clone(),
                hook.url(),
                body.clone(),
                failures.clone(),
                done.clone(),
            );
            workers.push(tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs(4);
                while Instant::now() < end {
                    match client.post(&url).body(body.clone()).send().await {
                        Ok(r) if r.status() == 200 => {}
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        kubelet_write(&volume, 2, &second);
        for w in workers {
            w.await.unwrap();
        }
        assert_eq!(
            failures.load(Ordering::SeqCst),
            0,
            "requests failed during rotation"
        );
        assert!(
            done.load(Ordering::SeqCst) > 20,
            "too few requests to show anything"
        );

        // New connections now get the new certificate: only the new CA verifies it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let fresh_new = client(&[&ca2]);
            if fresh_new
                .post(hook.url())
                .body(body.clone())
                .send()
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rotated certificate never served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let fresh_old = client(&[&ca1]);
        assert!(
            fresh_old
                .post(hook.url())
                .body(body.clone())
                .send()
                .await
                .is_err(),
            "old certificate still served"
        );
    });
    let logs = hook.drain_logs().join("\n");
    assert!(logs.contains("serving certificate reloaded"), "{logs}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (_dir, ca, mut hook) = start_webhook(&[]);
    let body = std::fs::read(data("reviews/twenty-containers.json")).unwrap();
    let http = client(&[&ca]);
    runtime().block_on(async {
        // Requests in flight when SIGTERM lands are answered, not dropped.
        let mut inflight = Vec::new();
        for _ in 0..8 {
            let (http, url, body) = (http.clone(), hook.url(), body.clone());
            inflight.push(tokio::spawn(async move {
                http.post(url)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        hook.terminate();
        for r in inflight {
            // Each either completed with 200, or was refused before it was accepted.
            if let Ok(status) = r.await.unwrap() {
                assert_eq!(status, 200);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = hook.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "webhook did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let logs = hook.drain_logs().join("\n");
    assert!(
        logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
}

#[test]
fn slow_headers_are_cut_off() {
    use std::io::{Read, Write};
    let (_dir, ca, hook) = start_webhook(&["--header-read-timeout-seconds", "1"]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "127.0.0.1".try_into().unwrap()).unwrap();
    let sock = std::net::TcpStream::connect(&hook.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "connection held open for {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
}
