//! `keywire webhook`: the HTTPS admission endpoint and the plain-HTTP health/metrics listener.
//! Handlers only parse, time and log; every decision is `admission::decide`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::cluster::KubeLookups;
use crate::core::annotations;
use crate::core::lookup::{
    ClusterState, Lookups, NamespaceInfo, SecretProviderClassInfo, ServiceAccountInfo,
};
use crate::core::plan::{PodView, Settings};
use crate::core::policy::{Enforcement, Policy};
use crate::webhook::admission;
use crate::webhook::budget::{BodyBudget, Reservation};
use crate::webhook::connections::{BoundedAcceptor, Connections};
use crate::webhook::metrics::Metrics;
use crate::webhook::tls::CertReloader;

/// Everything `keywire webhook` is started with.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub metrics_listen: SocketAddr,
    /// Lookups from these objects instead of the API server's watch caches (`--cluster-state`).
    pub cluster_state: Option<ClusterState>,
    pub settings: Settings,
    /// Ask the API server its version (native sidecars from 1.32) instead of assuming one.
    pub discover_kubernetes_version: bool,
    /// Largest accepted request body (413 beyond).
    pub max_body_bytes: usize,
    /// Body bytes held at once across all requests in flight (503 beyond).
    pub body_budget_bytes: usize,
    /// Time a client may take to send the body once the headers are in (408 beyond).
    pub body_read_timeout: Duration,
    pub header_read_timeout: Duration,
    /// Open connections (TLS handshakes included) beyond which new ones are closed on accept.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 and h2).
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    pub cert_reload_interval: Duration,
    /// Watch KeywirePolicies (their CRD must be installed).
    pub watch_policies: bool,
}

/// Where lookups come from: a file, or the API server's watch caches.
#[derive(Clone)]
pub enum Backend {
    File(Arc<ClusterState>),
    Kube(KubeLookups),
}

impl Lookups for Backend {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo> {
        match self {
            Backend::File(s) => s.service_account(namespace, name),
            Backend::Kube(k) => k.service_account(namespace, name),
        }
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        match self {
            Backend::File(s) => s.namespace(name),
            Backend::Kube(k) => k.namespace(name),
        }
    }

    fn secret_provider_class(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<SecretProviderClassInfo> {
        match self {
            Backend::File(s) => s.secret_provider_class(namespace, name),
            Backend::Kube(k) => k.secret_provider_class(namespace, name),
        }
    }

    fn policies(&self) -> Arc<Vec<Policy>> {
        match self {
            Backend::File(s) => s.policies(),
            Backend::Kube(k) => k.policies(),
        }
    }
}

pub struct AppState {
    pub backend: Backend,
    /// Records Events for `Audit` policy violations (API-server backend only).
    pub recorder: Option<kube::runtime::events::Recorder>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time a client may take to send the body once the headers are in.
    pub body_timeout: Duration,
    /// Body bytes held across all requests in flight.
    pub budget: Arc<BodyBudget>,
    pub connections: Arc<Connections>,
}

/// Oversize bodies are read and discarded up to this many times the limit, so an HTTP/1.1
/// client still sending receives its 413 instead of a connection reset.
const DRAIN_FACTOR: usize = 8;

const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
const H2_WINDOW: u32 = 256 * 1024;
const H2_MAX_STREAMS: u32 = 64;

/// Reads the body up to the limit, holding its bytes in `reservation`: 413 beyond the limit
/// (drained, bounded), 503 when the global budget cannot hold it, 408 when it is not sent in time.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    reservation: &mut Reservation,
) -> Result<Bytes, Response> {
    use futures::StreamExt;
    let limit = state.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(length) = declared {
        if length > limit.saturating_mul(DRAIN_FACTOR) {
            return Err(too_large(state, limit));
        }
        // A declared body is reserved whole before a byte of it is read: the budget refuses
        // fast instead of after the memory is spent.
        if length <= limit && !reservation.hold(length) {
            return Err(over_budget(state));
        }
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::with_capacity(declared.filter(|&n| n <= limit).unwrap_or(0));
        let mut total = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bad_request(format!("cannot read the body: {e}")))?;
            total = total.saturating_add(chunk.len());
            if total <= limit {
                if total > buf.capacity() {
                    // Grow as Vec would, but only with bytes the budget holds.
                    let capacity = total.max(buf.capacity().saturating_mul(2)).min(limit);
                    if !reservation.hold(capacity) {
                        return Err(over_budget(state));
                    }
                    buf.reserve_exact(capacity - buf.len());
                }
                buf.extend_from_slice(&chunk);
            } else if total > limit.saturating_mul(DRAIN_FACTOR) {
                break;
            }
        }
        if total > limit {
            return Err(too_large(state, limit));
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(state.body_timeout, read).await {
        Ok(result) => result,
        Err(_) => {
            state.metrics.record_shed("body_timeout");
            Err((
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            )
                .into_response())
        }
    }
}

fn too_large(state: &AppState, limit: usize) -> Response {
    state.metrics.record_shed("body_too_large");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("request body is larger than {limit} bytes\n"),
    )
        .into_response()
}

fn over_budget(state: &AppState) -> Response {
    state.metrics.record_shed("body_budget");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::RETRY_AFTER, "1"),
        ],
        "too many request bodies in flight; retry\n",
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn mutate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, admission::Endpoint::Mutate, headers, body).await
}

async fn validate(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(state, admission::Endpoint::Validate, headers, body).await
}

async fn handle(
    state: Arc<AppState>,
    endpoint: admission::Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut timer = state.metrics.timer(endpoint.label());
    // Held until the answer is built: the parsed object lives as long as its body.
    let mut reservation = state.budget.reservation();
    let body = match read_body(&state, &headers, body, &mut reservation).await {
        Ok(b) => b,
        Err(response) => {
            // Shedding is counted in keywire_requests_shed_total; a line per shed request
            // would turn a flood into a logging flood.
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                tracing::debug!(status = %response.status(), "shed a request body");
            } else {
                tracing::info!(status = %response.status(), "rejected a request body");
            }
            return response;
        }
    };
    let request = match admission::parse_for(&body, &state.backend) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, bytes = body.len(), "rejected a request body");
            return bad_request(e.to_string());
        }
    };
    let namespace = request.namespace.as_deref().unwrap_or("default");
    let pod = request
        .object
        .as_ref()
        .and_then(|o| o.pointer(crate::core::workload::pod_pointer(o).unwrap_or("")));
    if let (Backend::Kube(kube), Some(object)) = (&state.backend, pod) {
        let view = PodView::from_json(object);
        let mut misses = 0;
        if (annotations::is_opted_in(&view.labels)
            || annotations::uses_azure_workload_identity(&view.labels))
            && kube
                .prefetch_service_account(namespace, &view.service_account)
                .await
        {
            misses += 1;
        }
        // Policy selects by the namespace's labels and judges the classes volumes point at:
        // what the caches have not seen yet is fetched, never assumed absent.
        if !kube.policies().is_empty() {
            misses += u64::from(kube.prefetch_namespace(namespace).await);
            for class in crate::core::rules::classes_named(object) {
                misses += u64::from(kube.prefetch_secret_provider_class(namespace, &class).await);
            }
        }
        state.metrics.lookup_misses.inc_by(misses);
    }
    let decision = endpoint.decide(&request, &state.backend, &state.settings);
    state.metrics.record_violations(&decision.violations);
    if let Some(recorder) = &state.recorder
        && !request.dry_run.unwrap_or(false)
        && decision
            .violations
            .iter()
            .any(|v| v.enforcement == Enforcement::Audit)
    {
        record_audit_events(recorder.clone(), &request, &decision);
    }
    let body = admission::respond(&request.uid, &decision);
    timer.set_outcome(decision.outcome_label());
    tracing::info!(
        uid = %request.uid,
        namespace,
        kind = %request.kind.kind,
        operation = %request.operation,
        dry_run = request.dry_run.unwrap_or(false),
        outcome = decision.outcome_label(),
        patch_ops = decision.patch().len(),
        warnings = decision.warnings.len(),
        denial = match &decision.outcome { crate::core::engine::Outcome::Denied(m) => m.as_str(), _ => "" },
        elapsed_ms = timer.elapsed_ms(),
        endpoint = endpoint.label(),
        violations = decision.violations.len(),
        "admission review"
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One Warning Event per audited violation, on the object being admitted. Messages carry
/// policy, rule, field and the offending annotation value: never secrets, never the object.
fn record_audit_events(
    recorder: kube::runtime::events::Recorder,
    request: &admission::AdmissionRequest,
    decision: &crate::core::engine::Decision,
) {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType};
    let meta = request.object.as_ref().and_then(|o| o.get("metadata"));
    let name = request.name.clone().filter(|n| !n.is_empty()).or_else(|| {
        meta.and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    });
    let api_version = if request.kind.group.is_empty() {
        request.kind.version.clone()
    } else {
        format!("{}/{}", request.kind.group, request.kind.version)
    };
    let reference = ObjectReference {
        api_version: Some(api_version),
        kind: Some(request.kind.kind.clone()),
        namespace: request.namespace.clone(),
        name,
        uid: meta
            .and_then(|m| m.get("uid"))
            .and_then(|u| u.as_str())
            .map(str::to_string),
        ..ObjectReference::default()
    };
    let notes: Vec<String> = decision
        .violations
        .iter()
        .filter(|v| v.enforcement == Enforcement::Audit)
        .map(|v| v.to_string())
        .collect();
    tokio::spawn(async move {
        for note in notes {
            let event = Event {
                type_: EventType::Warning,
                reason: "PolicyAudit".to_string(),
                note: Some(note.chars().take(1024).collect()),
                action: "Admit".to_string(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not record a PolicyAudit Event");
            }
        }
    });
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.connections.at_cap() {
        (StatusCode::SERVICE_UNAVAILABLE, "at the connection cap\n").into_response()
    } else if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub fn webhook_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        // `read_body` enforces the limit itself, so a too-large body still gets its 413.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Descriptors beyond the connection cap: listeners, watch connections, files, the runtime.
const FD_HEADROOM: u64 = 64;

/// Raises the soft open-file limit to the hard one (as Go does at start): container runtimes
/// may start processes at 1024, below what `--max-connections` needs. Warns if still short.
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
    let needed = max_connections as u64 + FD_HEADROOM;
    if let Some(current) = getrlimit(Resource::Nofile).current
        && current < needed
    {
        tracing::warn!(
            open_file_limit = current,
            max_connections,
            "the open-file limit is below --max-connections plus headroom: connections past it \
             fail to be accepted instead of being counted and closed"
        );
    }
}

/// Runs until SIGTERM/SIGINT, then drains in-flight requests and returns.
pub async fn run(config: WebhookConfig) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_open_file_limit(config.max_connections);
    let reloader = CertReloader::load(&config.tls_cert_file, &config.tls_key_file)?;
    let metrics = Arc::new(Metrics::default());

    let mut settings = config.settings.clone();
    let backend = match config.cluster_state.clone() {
        Some(state) => Backend::File(Arc::new(state)),
        None => {
            let client = kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!(
                    "no --cluster-state given and no Kubernetes client configuration: {e}"
                )
            })?;
            if config.discover_kubernetes_version {
                match client.apiserver_version().await {
                    Ok(info) => {
                        if let Some(native) =
                            crate::core::azure::has_native_sidecars(&info.git_version)
                        {
                            settings.workload_identity.native_sidecars = native;
                        }
                        tracing::info!(version = %info.git_version, native_sidecars = settings.workload_identity.native_sidecars, "Kubernetes version");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the API server's version; assuming native sidecars")
                    }
                }
            }
            Backend::Kube(KubeLookups::start(client, config.watch_policies))
        }
    };
    let recorder = match &backend {
        Backend::Kube(k) => Some(kube::runtime::events::Recorder::new(
            k.client(),
            kube::runtime::events::Reporter {
                controller: "keywire-webhook".to_string(),
                instance: std::env::var("POD_NAME").ok(),
            },
        )),
        Backend::File(_) => None,
    };
    let connections =
        Connections::new(config.max_connections, config.idle_timeout, metrics.clone());
    let state = Arc::new(AppState {
        recorder,
        backend: backend.clone(),
        settings,
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_read_timeout,
        budget: BodyBudget::new(config.body_budget_bytes, metrics.clone()),
        connections: connections.clone(),
    });

    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.metrics_listen))?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(
        axum::serve(metrics_listener, metrics_router(state.clone()))
            .with_graceful_shutdown(async {
                let _ = metrics_stopped.await;
            })
            .into_future(),
    );

    let watcher = {
        let metrics = metrics.clone();
        tokio::spawn(
            reloader
                .clone()
                .watch(config.cert_reload_interval, move || {
                    metrics.cert_reloads.inc();
                }),
        )
    };

    let handle = axum_server::Handle::new();
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(reloader.server_config()));
    let acceptor = BoundedAcceptor::new(
        axum_server::tls_rustls::RustlsAcceptor::new(tls)
            .handshake_timeout(config.tls_handshake_timeout),
        connections,
    );
    let mut server = axum_server::bind(config.listen)
        .acceptor(acceptor)
        .handle(handle.clone());
    server
        .http_builder()
        .http1()
        .keep_alive(true)
        .header_read_timeout(Some(config.header_read_timeout));
    // h2: ping to find dead peers; small windows so unread bodies cannot pile up per stream.
    server
        .http_builder()
        .http2()
        .keep_alive_interval(Some(H2_PING_INTERVAL))
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .initial_connection_window_size(Some(H2_WINDOW))
        .initial_stream_window_size(Some(H2_WINDOW))
        .max_concurrent_streams(Some(H2_MAX_STREAMS));
    let app = webhook_router(state.clone());
    let serving = tokio::spawn(server.serve(app.into_make_service()));

    let Some(addr) = handle.listening().await else {
        let result = serving.await;
        anyhow::bail!("cannot listen on {}: {result:?}", config.listen);
    };
    tracing::info!(addr = %addr, "webhook listening");
    let readiness = {
        let state = state.clone();
        tokio::spawn(async move {
            let synced = match &state.backend {
                Backend::File(_) => true,
                Backend::Kube(k) => k.ready().await,
            };
            if synced {
                state.ready.store(true, Ordering::SeqCst);
                state.metrics.ready.set(1);
                tracing::info!("ready");
            }
        })
    };

    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    state.ready.store(false, Ordering::SeqCst);
    state.metrics.ready.set(0);
    readiness.abort();
    watcher.abort();
    handle.graceful_shutdown(Some(config.shutdown_grace));
    serving.await??;
    let _ = stop_metrics.send(());
    metrics_server.await??;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let start = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(256),
                maximum: start.maximum,
            },
        )
        .unwrap();
        raise_open_file_limit(1024);
        let raised = getrlimit(Resource::Nofile);
        assert_eq!(raised.current, start.maximum);
    }
}
