//! Shared harness for tests that run the real `keywire` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keywire")
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keywire");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Runs `keywire certs` into `dir` for 127.0.0.1 and returns the CA PEM.
pub fn make_certs(dir: &Path) -> String {
    let out = run(
        &[
            "certs",
            "--out-dir",
            dir.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--host",
            "localhost",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("ca.crt")).unwrap()
}

/// A running `keywire webhook` on loopback ports it chose itself.
pub struct Webhook {
    pub child: Child,
    pub addr: String,
    pub metrics_addr: String,
    pub logs: mpsc::Receiver<String>,
}

impl Webhook {
    pub fn start(cert: &Path, key: &Path, state: &Path, extra: &[&str]) -> Webhook {
        let mut child = Command::new(bin())
            .args([
                "webhook",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--cluster-state",
                state.to_str().unwrap(),
                "--cert-reload-seconds",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn webhook");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut metrics_addr) = (None, None);
        while addr.is_none() || metrics_addr.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("webhook did not report its listeners");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let found = v["fields"]["addr"].as_str().map(str::to_string);
            match v["fields"]["message"].as_str() {
                Some("webhook listening") => addr = found,
                Some("metrics listening") => metrics_addr = found,
                _ => {}
            }
        }
        Webhook {
            child,
            addr: addr.unwrap(),
            metrics_addr: metrics_addr.unwrap(),
            logs: rx,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}/mutate", self.addr)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    /// Everything logged so far.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook on fresh `keywire certs` material and `tests/data/cluster-state.yaml`: the temp dir
/// holding the certificates, the CA PEM, and the running server.
pub fn start_webhook(extra: &[&str]) -> (tempfile::TempDir, String, Webhook) {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certs(dir.path());
    let hook = Webhook::start(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &data("cluster-state.yaml"),
        extra,
    );
    (dir, ca, hook)
}

/// An HTTPS client that trusts only the given CA PEMs.
pub fn client(ca_pems: &[&str]) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = ca_pems
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
