//! `keywire controller`: materialises the SecretProviderClasses of inline configs and fills their
//! synced Secrets from Key Vault with the pods' own identities, before any pod needs them.
//!
//! The desired state is a pure function (`desired`); Key Vault sits behind one trait
//! (`keyvault`) with a fan-in cache in front (`cache`); the reconcile loop (`reconcile`) applies
//! the difference at the edge, only on the replica holding the leader Lease (`leader`). `run`
//! joins the loop, the Lease and the health/metrics listener under one shutdown signal.

pub mod cache;
pub mod content;
pub mod desired;
pub mod identity;
pub mod keyvault;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::cluster::{Change, KubeLookups};
use crate::controller::cache::ReadCache;
use crate::controller::desired::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::controller::identity::{Credentials, IdentitySettings};
use crate::controller::keyvault::{AzureKeyVault, AzureSettings, KeyVault, error_chain};
use crate::controller::leader::LeaseConfig;
use crate::controller::metrics::Metrics;
use crate::controller::reconcile::{Context, LoopSettings, Stores};
use crate::core::annotations;
use crate::core::plan::Settings;

/// Everything `keywire controller` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub metrics_listen: SocketAddr,
    pub settings: Settings,
    pub identity: IdentitySettings,
    pub azure: AzureSettings,
    /// Trust only this CA (PEM) for Entra and Key Vault; otherwise the system's roots.
    pub ca_file: Option<PathBuf>,
    pub loop_settings: LoopSettings,
    pub lease: LeaseConfig,
    /// Changes within this window are reconciled together (a rollout is one reconcile).
    pub debounce: Duration,
    /// Watch KeywirePolicies (their CRD must be installed).
    pub watch_policies: bool,
    /// Write OpenReports `Report`s: `Some(true)` always, `Some(false)` never, `None` when the
    /// API server serves them.
    pub policy_reports: Option<bool>,
}

struct Health {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Arc<Health>>) -> Response {
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn serve_metrics(State(h): State<Arc<Health>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
        .into_response()
}

fn report_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("openreports.io", "v1alpha1", report::REPORT_KIND),
        "reports",
    )
}

/// Whether to write policy Reports: as configured, or when the API server serves them.
async fn reports_enabled(client: &kube::Client, configured: Option<bool>) -> bool {
    match configured {
        Some(v) => v,
        None => Api::<DynamicObject>::all_with(client.clone(), &report_resource())
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .is_ok(),
    }
}

/// Keeps each KeywirePolicy's status current (every few seconds, only when it changed), and
/// says with a Warning Event when keywire ignores one.
async fn publish_policy_status(ctx: Arc<Context>, recorder: Recorder) {
    use kube::api::{Patch, PatchParams};
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keywire.dev", "v1alpha1", crate::core::policy::KIND),
        "keywirepolicies",
    );
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let mut last: std::collections::HashMap<String, serde_json::Value> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let counts = {
            let findings = ctx.findings.lock().unwrap_or_else(|p| p.into_inner());
            report::counts(&findings)
        };
        for (name, generation, error) in ctx.lookups.policy_objects() {
            let c = counts.get(&name).copied().unwrap_or_default();
            let mut status = report::policy_status(generation, error.as_deref(), c, "");
            if last.get(&name) == Some(&status) {
                continue;
            }
            let key = status.clone();
            status["conditions"][0]["lastTransitionTime"] =
                serde_json::json!(k8s_openapi::jiff::Timestamp::now().to_string());
            let patch = serde_json::json!({
                "apiVersion": "keywire.dev/v1alpha1",
                "kind": crate::core::policy::KIND,
                "metadata": {"name": name},
                "status": status,
            });
            match api
                .patch_status(
                    &name,
                    &PatchParams::apply("keywire").force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => {
                    if let Some(e) = &error {
                        let reference = k8s_openapi::api::core::v1::ObjectReference {
                            api_version: Some("keywire.dev/v1alpha1".into()),
                            kind: Some(crate::core::policy::KIND.into()),
                            name: Some(name.clone()),
                            ..Default::default()
                        };
                        let event = kube::runtime::events::Event {
                            type_: kube::runtime::events::EventType::Warning,
                            reason: "InvalidPolicy".into(),
                            note: Some(
                                format!("keywire ignores this policy: {e}")
                                    .chars()
                                    .take(1024)
                                    .collect(),
                            ),
                            action: "Parse".into(),
                            secondary: None,
                        };
                        let _ = recorder.publish(&event, &reference).await;
                    }
                    last.insert(name, key);
                }
                Err(e) => {
                    tracing::warn!(policy = %name, error = %error_chain(&e), "could not update a KeywirePolicy status")
                }
            }
        }
    }
}

fn spc_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
}

/// The HTTP client under the Azure crates: rustls with ring, the given CA or the system roots.
fn transport(config: &Config) -> anyhow::Result<azure_core::http::Transport> {
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .timeout(config.azure.timeout)
        .connect_timeout(Duration::from_secs(5));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read --ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--ca-file {} holds no certificate", path.display());
        }
        builder = builder.tls_certs_only(certs);
    }
    let client = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTPS client: {e}"))?;
    Ok(azure_core::http::Transport::new(Arc::new(client)))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

/// Runs until SIGTERM/SIGINT: the health listener always, the reconcile loop while leading.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no Kubernetes client configuration: {}", error_chain(&e)))?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
    });
    let transport = transport(&config)?;

    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.metrics_listen))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = {
        let mut stop = stop_rx.clone();
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(serve_metrics))
            .with_state(health.clone());
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .into_future(),
        )
    };

    let (leading_tx, mut leading_rx) = watch::channel(false);
    let election = tokio::spawn(leader::run(
        client.clone(),
        config.lease.clone(),
        leading_tx,
        stop_rx.clone(),
    ));
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        }
    });

    // A standby is ready once it has looked at the Lease; the leader once its stores are synced.
    health.ready.store(true, Ordering::SeqCst);
    metrics.ready.set(1);
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = leading_rx.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        if *stop.borrow() {
            break;
        }
        tracing::info!(identity = %config.lease.identity, "leading: starting the reconcile loop");
        metrics.leader.set(1);
        health.ready.store(false, Ordering::SeqCst);
        let mut until = leading_rx.clone();
        let mut stop_lead = stop_rx.clone();
        let ended = async move {
            tokio::select! {
                _ = until.wait_for(|l| !*l) => {}
                _ = stop_lead.wait_for(|s| *s) => {}
            }
        };
        lead(
            client.clone(),
            &config,
            transport.clone(),
            metrics.clone(),
            health.clone(),
            ended,
        )
        .await;
        metrics.leader.set(0);
        health.ready.store(true, Ordering::SeqCst);
        tracing::info!("stopped leading");
    }
    let _ = election.await;
    let _ = stop_tx.send(true);
    let _ = http.await;
    tracing::info!("stopped");
    Ok(())
}

/// One term of leadership: the watches, the stores and the reconcile loop, until `ended`.
async fn lead(
    client: kube::Client,
    config: &Config,
    transport: azure_core::http::Transport,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    ended: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let lookups = KubeLookups::start(client.clone(), config.watch_policies);
    let credentials = Arc::new(Credentials::new(
        client.clone(),
        config.identity.clone(),
        transport.clone(),
    ));
    let vault: Arc<dyn KeyVault> = Arc::new(AzureKeyVault::new(
        config.azure.clone(),
        transport,
        credentials,
        metrics.clone(),
    ));
    let cache = ReadCache::new(vault, config.loop_settings.rotation_interval);

    let opted_in =
        watcher::Config::default().labels(&format!("{}=true", annotations::INJECT_LABEL));
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));

    let (pods, pods_w) = reflector::store();
    let pod_stream = watcher(Api::<Pod>::all(client.clone()), opted_in)
        .default_backoff()
        .modify(reconcile::strip_pod)
        .reflect(pods_w)
        .touched_objects();

    fn workload_stream<W>(
        client: &kube::Client,
    ) -> (
        reflector::Store<W>,
        impl futures::Stream<Item = Result<W, watcher::Error>> + Send + 'static,
    )
    where
        W: reconcile::Workload
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let (store, writer) = reflector::store::<W>();
        let stream = watcher(Api::<W>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(reconcile::strip_workload::<W>)
            .reflect(writer)
            .touched_objects();
        (store, stream)
    }
    let (deployments, deployment_stream) = workload_stream::<Deployment>(&client);
    let (stateful_sets, stateful_set_stream) = workload_stream::<StatefulSet>(&client);
    let (daemon_sets, daemon_set_stream) = workload_stream::<DaemonSet>(&client);
    let (replica_sets, replica_set_stream) = workload_stream::<ReplicaSet>(&client);
    let (jobs, job_stream) = workload_stream::<Job>(&client);
    let (cron_jobs, cron_job_stream) = workload_stream::<CronJob>(&client);

    let class_resource = spc_resource();
    let class_writer = reflector::store::Writer::new(class_resource.clone());
    let classes = class_writer.as_reader();
    let class_stream = watcher(
        Api::<DynamicObject>::all_with(client.clone(), &class_resource),
        owned.clone(),
    )
    .default_backoff()
    .modify(|o: &mut DynamicObject| reconcile::strip_metadata(&mut o.metadata))
    .reflect(class_writer)
    .touched_objects();

    let (secrets, secrets_w) = reflector::store();
    let secret_stream = watcher(Api::<Secret>::all(client.clone()), owned)
        .default_backoff()
        .modify(reconcile::strip_secret)
        .reflect(secrets_w)
        .touched_objects();

    let stores = Stores {
        pods: pods.clone(),
        deployments: deployments.clone(),
        stateful_sets: stateful_sets.clone(),
        daemon_sets: daemon_sets.clone(),
        replica_sets: replica_sets.clone(),
        jobs: jobs.clone(),
        cron_jobs: cron_jobs.clone(),
        classes: classes.clone(),
        secrets: secrets.clone(),
    };

    // Nothing is reconciled before every store holds a full list: an empty store would look like
    // "no consumers" and start collecting what is still in use.
    let synced = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let synced = synced.clone();
        let health = health.clone();
        let lookups = lookups.clone();
        let stores = stores.clone();
        async move {
            let all_ready = async {
                stores.pods.wait_until_ready().await.is_ok()
                    && stores.deployments.wait_until_ready().await.is_ok()
                    && stores.stateful_sets.wait_until_ready().await.is_ok()
                    && stores.daemon_sets.wait_until_ready().await.is_ok()
                    && stores.replica_sets.wait_until_ready().await.is_ok()
                    && stores.jobs.wait_until_ready().await.is_ok()
                    && stores.cron_jobs.wait_until_ready().await.is_ok()
                    && stores.classes.wait_until_ready().await.is_ok()
                    && stores.secrets.wait_until_ready().await.is_ok()
                    && lookups.ready().await
            };
            if all_ready.await {
                synced.store(true, Ordering::SeqCst);
                health.ready.store(true, Ordering::SeqCst);
                tracing::info!("caches synced");
            }
        }
    });

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "keywire-controller".to_string(),
            instance: Some(config.lease.identity.clone()),
        },
    );
    let reports = reports_enabled(&client, config.policy_reports).await;
    tracing::info!(
        enabled = reports,
        "policy Reports (openreports.io/v1alpha1)"
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        stores,
        lookups.clone(),
        config.settings.clone(),
        config.loop_settings.clone(),
        cache,
        metrics,
        recorder.clone(),
        class_resource,
        reports.then(report_resource),
    ));
    let status = config
        .watch_policies
        .then(|| tokio::spawn(publish_policy_status(ctx.clone(), recorder)));

    // ServiceAccount and Namespace changes reconcile their namespace; policy changes, all.
    let (namespace_changes, policy_changes) = {
        let mut rx = lookups.changes();
        let (ns_tx, ns_rx) = tokio::sync::mpsc::unbounded_channel::<ObjectRef<Namespace>>();
        let (all_tx, all_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Change::ServiceAccount(ns)) => {
                        let _ = ns_tx.send(ObjectRef::new(&ns));
                    }
                    Ok(Change::Namespace(_)) => {}
                    Ok(Change::Policies) => {
                        let _ = all_tx.send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = all_tx.send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        (tokio_stream_from(ns_rx), tokio_stream_from(all_rx))
    };

    let gate = synced.clone();
    let reconcile_when_synced = move |ns: Arc<Namespace>, ctx: Arc<Context>| {
        let gate = gate.clone();
        async move {
            if !gate.load(Ordering::SeqCst) {
                return Ok(kube::runtime::controller::Action::requeue(
                    Duration::from_millis(500),
                ));
            }
            reconcile::reconcile(ns, ctx).await
        }
    };

    Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(
        kube::runtime::controller::Config::default()
            .debounce(config.debounce)
            .concurrency(4),
    )
    .watches_stream(pod_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(deployment_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(stateful_set_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(daemon_set_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(replica_set_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(job_stream, |o| reconcile::namespace_of(&o))
    .watches_stream(cron_job_stream, |o| reconcile::namespace_of(&o))
    .watches_stream_with(
        class_stream,
        |o| reconcile::namespace_of(&o),
        spc_resource(),
    )
    .watches_stream(secret_stream, |o| reconcile::namespace_of(&o))
    .reconcile_on(namespace_changes)
    .reconcile_all_on(policy_changes)
    .graceful_shutdown_on(ended)
    .run(reconcile_when_synced, reconcile::error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "controller event");
        }
    })
    .await;
    if let Some(task) = status {
        task.abort();
    }
}

/// A stream over an unbounded receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
