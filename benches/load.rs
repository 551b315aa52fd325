//! `keywire-load`: drives a running `keywire webhook` with AdmissionReviews over HTTPS keep-alive.
//!
//! Each worker owns one HTTP/1.1 connection and has at most one request in flight on it. With
//! `--rate R` the workers share R requests per second on a fixed schedule (a worker that falls
//! behind sends immediately until it has caught up); `--rate 0` sends back to back. Latency is
//! measured per request from the moment it is handed to the connection to the moment the whole
//! response body has arrived. Only the CA given with `--ca-file` is trusted.
//!
//! See benches/run-load.sh and docs/benchmarks.md.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Payload {
    /// An opted-in pod with one container.
    Small,
    /// The same pod with 20 containers.
    Large,
}

impl Payload {
    fn name(self) -> &'static str {
        match self {
            Payload::Small => "small",
            Payload::Large => "large",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "keywire-load",
    about = "Load generator for `keywire webhook` (HTTPS, keep-alive)"
)]
struct Args {
    /// The webhook endpoint, e.g. https://127.0.0.1:8443/mutate.
    #[arg(long)]
    url: Uri,
    /// PEM CA certificate(s) to trust; nothing else is trusted.
    #[arg(long)]
    ca_file: PathBuf,
    /// TLS server name to verify; defaults to the URL's host.
    #[arg(long)]
    server_name: Option<String>,
    /// Connections (one worker each, one request in flight per connection).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Target requests per second over all connections; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    duration_seconds: f64,
    #[arg(long, value_enum, default_value = "small")]
    payload: Payload,
    /// Runtime threads of the load generator itself.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Namespace sent in the AdmissionReview (the ServiceAccount "app" must exist there).
    #[arg(long, default_value = "prod")]
    namespace: String,
    /// Label printed in the one-line RESULT summary.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the latency distribution here as CSV (`percentile,latency_ms`), for plotting.
    #[arg(long)]
    latency_out: Option<PathBuf>,
}

/// Percentiles written by `--latency-out`: dense near the tail, as latency plots need.
fn distribution_points() -> Vec<f64> {
    let mut points: Vec<f64> = (0..=90).map(f64::from).collect();
    let mut tail = 90.0;
    // 90, 99, 99.9, 99.99 and ten steps within each decade between them.
    while tail < 99.995 {
        let gap = 100.0 - tail;
        for i in 1..=10 {
            points.push(tail + gap * 0.09 * f64::from(i));
        }
        tail = 100.0 - gap / 10.0;
    }
    points.push(100.0);
    points
}

/// What a worker measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    errors: u64,
    reconnects: u64,
    first_errors: Vec<String>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(message);
        }
    }
}

fn review(uid: &str, namespace: &str, payload: Payload) -> Bytes {
    let containers = match payload {
        Payload::Small => 1,
        Payload::Large => 20,
    };
    let pod = keywire::fixtures::replica_pod(containers);
    Bytes::from(keywire::fixtures::pod_review_bytes(uid, namespace, &pod))
}

fn tls_config(ca_file: &PathBuf) -> Result<Arc<rustls::ClientConfig>> {
    let pem =
        std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.with_context(|| format!("bad PEM in {}", ca_file.display()))?)
            .context("CA certificate rejected")?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where and how to connect; shared by all workers.
struct Target {
    addr: String,
    authority: String,
    path: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(target: &Target) -> Result<Sender> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let tls = target
        .connector
        .connect(target.server_name.clone(), tcp)
        .await
        .context("TLS handshake")?;
    let (sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends one review and checks the answer: 200, the same uid, allowed, and a JSON patch.
async fn send(
    sender: &mut Sender,
    target: &Target,
    body: &Bytes,
    uid_field: &[u8],
) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection not ready: {e}"))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ));
    }
    for (needle, what) in [
        (uid_field, "the request uid"),
        (&b"\"allowed\":true"[..], "\"allowed\":true"),
        (&b"\"patchType\":\"JSONPatch\""[..], "a JSON patch"),
    ] {
        if !contains(&bytes, needle) {
            return Err(format!(
                "response lacks {what}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ));
        }
    }
    Ok(())
}

async fn worker(
    id: usize,
    target: Arc<Target>,
    args: Arc<Args>,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let uid = format!("keywire-load-{id}");
    let uid_field = format!("\"uid\":\"{uid}\"").into_bytes();
    let body = review(&uid, &args.namespace, args.payload);
    let mut sender = match connect(&target).await {
        Ok(s) => s,
        Err(e) => {
            tally.error(format!("{e:#}"));
            return tally;
        }
    };
    // One unmeasured request per connection, so first-use costs are not in the numbers.
    if let Err(e) = send(&mut sender, &target, &body, &uid_field).await {
        tally.error(format!("warm-up: {e}"));
    }

    // Worker `id` of N sends at start + (k + id/N) * N/rate: evenly interleaved with the others.
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let offset = interval.map(|i| i.mul_f64(id as f64 / args.concurrency as f64));
    let mut k: u32 = 0;
    loop {
        if let (Some(interval), Some(offset)) = (interval, offset) {
            let due = start + offset + interval * k;
            k += 1;
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if Instant::now() >= end {
            break;
        }
        if sender.is_closed() {
            tally.reconnects += 1;
            match connect(&target).await {
                Ok(s) => sender = s,
                Err(e) => {
                    tally.error(format!("reconnect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let sent = Instant::now();
        match send(&mut sender, &target, &body, &uid_field).await {
            Ok(()) => {
                tally.ok += 1;
                tally
                    .latencies_us
                    .push(sent.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
            }
            Err(e) => tally.error(e),
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn run(args: Args) -> Result<bool> {
    let uri = &args.url;
    if uri.scheme_str() != Some("https") {
        bail!("--url must be https://HOST:PORT/PATH");
    }
    let host = uri.host().ok_or_else(|| anyhow!("--url has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = args.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.clone()).context("--server-name")?,
    };
    let addr = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let target = Arc::new(Target {
        addr,
        authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        server_name,
        connector: TlsConnector::from(tls_config(&args.ca_file)?),
    });
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let body_len = review("keywire-load-0", &args.namespace, args.payload).len();
    let args = Arc::new(args);

    // Start everyone together, a little in the future so connections are up first.
    let start = Instant::now() + Duration::from_millis(300);
    let end = start + Duration::from_secs_f64(args.duration_seconds);
    let handles: Vec<_> = (0..args.concurrency)
        .map(|id| tokio::spawn(worker(id, target.clone(), args.clone(), start, end)))
        .collect();
    let mut total = Tally::default();
    for h in handles {
        let t = h.await.context("worker panicked")?;
        total.latencies_us.extend(t.latencies_us);
        total.ok += t.ok;
        total.errors += t.errors;
        total.reconnects += t.reconnects;
        for e in t.first_errors {
            if total.first_errors.len() < 5 {
                total.first_errors.push(e);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = total.latencies_us;
    lat.sort_unstable();
    let requests = total.ok + total.errors;
    let rps = total.ok as f64 / elapsed;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1000.0
    };
    let (p50, p90, p99, p999, max) = (
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 99.9)),
        ms(lat.last().copied().unwrap_or(0)),
    );
    let rate = if args.rate > 0.0 {
        format!("{}", args.rate)
    } else {
        "unlimited".into()
    };
    println!(
        "keywire-load: {} payload ({body_len} B), concurrency {}, rate {rate}, {:.1} s",
        args.payload.name(),
        args.concurrency,
        elapsed
    );
    println!(
        "  requests {requests}  ok {}  errors {}  reconnects {}",
        total.ok, total.errors, total.reconnects
    );
    println!("  achieved {rps:.1} req/s");
    println!(
        "  latency ms: mean {mean:.3}  p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}"
    );
    for e in &total.first_errors {
        println!("  error: {e}");
    }
    if let Some(path) = &args.latency_out {
        let mut csv = String::from("percentile,latency_ms\n");
        for p in distribution_points() {
            csv.push_str(&format!("{p:.4},{:.4}\n", ms(percentile(&lat, p))));
        }
        std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "RESULT label={} payload={} bytes={body_len} concurrency={} rate={rate} requests={requests} errors={} reconnects={} rps={rps:.1} p50_ms={p50:.3} p90_ms={p90:.3} p99_ms={p99:.3} p999_ms={p999:.3} max_ms={max:.3}",
        if args.label.is_empty() {
            "-"
        } else {
            &args.label
        },
        args.payload.name(),
        args.concurrency,
        total.errors,
        total.reconnects,
    );
    Ok(total.errors == 0 && total.ok > 0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keywire-load: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("keywire-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
