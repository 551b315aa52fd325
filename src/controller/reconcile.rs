//! The reconcile loop: one namespace at a time (the unit keywire materialises per config), from
//! the watch stores to `desired::desired`, then the difference applied at the edge: server-side
//! apply of SecretProviderClasses and Secrets (field manager `keywire`), Key Vault reads through
//! the fan-in cache, Events, restarts on rotation and garbage collection after the grace period.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, PodTemplateSpec, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::cluster::KubeLookups;
use crate::controller::cache::{ReadCache, Source};
use crate::controller::content;
use crate::controller::desired::{
    self, CONFIG_LABEL, CONTENT_HASH, Collect, Consumer, ConsumerRef, DesiredSecret, MANAGED_BY,
    MANAGED_BY_LABEL, Owned, RESTARTED_AT, UNUSED_SINCE,
};
use crate::controller::keyvault::{ObjectRequest, VaultError, error_chain};
use crate::controller::metrics::Metrics;
use crate::controller::report;
use crate::core::plan::Settings;

/// Field manager of everything the controller applies.
pub const FIELD_MANAGER: &str = "keywire";
/// Field manager of the garbage-collection marks (kept apart so applies never drop them).
pub const GC_FIELD_MANAGER: &str = "keywire-gc";

/// How the loop behaves; from `keywire controller`'s flags.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// How often synced values are read again (and the fan-in cache's lifetime).
    pub rotation_interval: Duration,
    /// Up to this fraction of the interval is added at random, so namespaces spread out.
    pub jitter: f64,
    /// How long an unused SecretProviderClass or Secret is kept before it is deleted.
    pub gc_grace: Duration,
    /// Retry after a failure that gave no Retry-After.
    pub retry: Duration,
}

/// The watch stores the loop reads.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub daemon_sets: Store<DaemonSet>,
    pub replica_sets: Store<ReplicaSet>,
    pub jobs: Store<Job>,
    pub cron_jobs: Store<CronJob>,
    pub classes: Store<DynamicObject>,
    pub secrets: Store<Secret>,
}

pub struct Context {
    pub client: kube::Client,
    pub stores: Stores,
    pub lookups: KubeLookups,
    pub settings: Settings,
    pub loop_settings: LoopSettings,
    pub cache: ReadCache,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub class_resource: kube::api::ApiResource,
    /// Where policy reports go (`None`: the Report CRD is not installed).
    pub report_resource: Option<kube::api::ApiResource>,
    /// Each namespace's last findings (for the KeywirePolicies' status), and the hash of the
    /// Report last applied there.
    pub findings: Mutex<BTreeMap<String, desired::Desired>>,
    reports: Mutex<HashMap<String, String>>,
    /// (object uid, reason, message) -> when last published, so a standing problem is reported
    /// once an hour rather than on every reconcile.
    reported: Mutex<HashMap<(String, String, String), Instant>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {}", error_chain(source))]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

const REPORT_EVERY: Duration = Duration::from_secs(3600);

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        stores: Stores,
        lookups: KubeLookups,
        settings: Settings,
        loop_settings: LoopSettings,
        cache: ReadCache,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        class_resource: kube::api::ApiResource,
        report_resource: Option<kube::api::ApiResource>,
    ) -> Self {
        Context {
            client,
            stores,
            lookups,
            settings,
            loop_settings,
            cache,
            metrics,
            recorder,
            class_resource,
            report_resource,
            findings: Mutex::new(BTreeMap::new()),
            reports: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// The pods and pod templates of a namespace that may use keywire.
    fn consumers(&self, namespace: &str) -> Vec<Consumer> {
        fn template<K: Resource<DynamicType = ()> + ResourceExt>(
            kind: &str,
            api_version: &str,
            object: &K,
            template: Option<&PodTemplateSpec>,
        ) -> Option<Consumer> {
            let pod = serde_json::to_value(template?).ok()?;
            Some(Consumer {
                api_version: api_version.into(),
                kind: kind.into(),
                name: object.name_any(),
                uid: object.uid().unwrap_or_default(),
                pod,
                duplicates: Vec::new(),
            })
        }
        let mut out: Vec<Consumer> = Vec::new();
        // Pods of one template are judged once: the rest ride along as duplicates.
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        for pod in self.stores.pods.state() {
            let done = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            if pod.namespace().as_deref() != Some(namespace)
                || pod.metadata.deletion_timestamp.is_some()
                || done
            {
                continue;
            }
            let reference = ConsumerRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
            };
            let signature = {
                use sha2::Digest;
                let bytes = serde_json::to_vec(&(
                    &pod.metadata.labels,
                    &pod.metadata.annotations,
                    &pod.spec,
                ))
                .unwrap_or_default();
                sha2::Sha256::digest(&bytes).to_vec()
            };
            if let Some(&i) = seen.get(&signature) {
                out[i].duplicates.push(reference);
                continue;
            }
            let mut value = json!({
                "metadata": {
                    "labels": pod.metadata.labels,
                    "annotations": pod.metadata.annotations,
                },
                "spec": pod.spec,
            });
            if let Some(name) = &pod.metadata.name {
                value["metadata"]["name"] = json!(name);
            }
            seen.insert(signature, out.len());
            out.push(Consumer {
                api_version: reference.api_version,
                kind: reference.kind,
                name: reference.name,
                uid: reference.uid,
                pod: value,
                duplicates: Vec::new(),
            });
        }
        fn templates<W: Workload>(store: &Store<W>, namespace: &str, out: &mut Vec<Consumer>) {
            for o in store.state() {
                if o.namespace().as_deref() == Some(namespace)
                    && o.meta().deletion_timestamp.is_none()
                {
                    out.extend(template(W::KIND, W::API_VERSION, o.as_ref(), o.template()));
                }
            }
        }
        let s = &self.stores;
        templates(&s.deployments, namespace, &mut out);
        templates(&s.stateful_sets, namespace, &mut out);
        templates(&s.daemon_sets, namespace, &mut out);
        templates(&s.replica_sets, namespace, &mut out);
        templates(&s.jobs, namespace, &mut out);
        templates(&s.cron_jobs, namespace, &mut out);
        out
    }

    fn owned_classes(&self, namespace: &str) -> Vec<Owned> {
        self.stores
            .classes
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(namespace) && is_owned(&o.metadata))
            .map(|o| owned(&o.metadata))
            .collect()
    }

    fn owned_secrets(&self, namespace: &str) -> Vec<Owned> {
        self.stores
            .secrets
            .state()
            .iter()
            .filter(|o| o.namespace().as_deref() == Some(namespace) && is_owned(&o.metadata))
            .map(|o| owned(&o.metadata))
            .collect()
    }

    /// Publishes an Event, unless the same one went out for this object within the hour.
    async fn event(&self, target: &ObjectReference, kind: EventType, reason: &str, note: String) {
        let key = (
            target.uid.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}",
                    target.kind.clone().unwrap_or_default(),
                    target.name.clone().unwrap_or_default()
                )
            }),
            reason.to_string(),
            note.clone(),
        );
        // Repeats of standing problems are throttled; Synced and Rotated are news every time.
        if matches!(kind, EventType::Warning) {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            if reported
                .get(&key)
                .is_some_and(|at| at.elapsed() < REPORT_EVERY)
            {
                return;
            }
            reported.retain(|_, at| at.elapsed() < REPORT_EVERY);
            reported.insert(key, Instant::now());
        }
        let event = Event {
            type_: kind,
            reason: reason.to_string(),
            note: Some(note.chars().take(1024).collect()),
            action: "Sync".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, target).await {
            tracing::warn!(reason, error = %error_chain(&e), "could not record an Event");
        }
    }
}

/// The workload kinds whose pod templates are consumers.
pub trait Workload: Resource<DynamicType = ()> + ResourceExt + Clone {
    const KIND: &'static str;
    const API_VERSION: &'static str;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec>;
    fn clear_status(&mut self);
}

macro_rules! workload {
    ($kind:ty, $name:literal, $api:literal, |$o:ident| $get:expr, |$m:ident| $get_mut:expr) => {
        impl Workload for $kind {
            const KIND: &'static str = $name;
            const API_VERSION: &'static str = $api;
            fn template(&self) -> Option<&PodTemplateSpec> {
                let $o = self;
                $get
            }
            fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
                let $m = self;
                $get_mut
            }
            fn clear_status(&mut self) {
                self.status = None;
            }
        }
    };
}

workload!(
    Deployment,
    "Deployment",
    "apps/v1",
    |o| o.spec.as_ref().map(|s| &s.template),
    |o| o.spec.as_mut().map(|s| &mut s.template)
);
workload!(
    StatefulSet,
    "StatefulSet",
    "apps/v1",
    |o| o.spec.as_ref().map(|s| &s.template),
    |o| o.spec.as_mut().map(|s| &mut s.template)
);
workload!(
    DaemonSet,
    "DaemonSet",
    "apps/v1",
    |o| o.spec.as_ref().map(|s| &s.template),
    |o| o.spec.as_mut().map(|s| &mut s.template)
);
// A ReplicaSet scaled to zero (a Deployment's old revision) no longer uses its config.
workload!(
    ReplicaSet,
    "ReplicaSet",
    "apps/v1",
    |o| o
        .spec
        .as_ref()
        .filter(|s| s.replicas.unwrap_or(1) > 0)
        .and_then(|s| s.template.as_ref()),
    |o| o.spec.as_mut().and_then(|s| s.template.as_mut())
);
workload!(
    Job,
    "Job",
    "batch/v1",
    |o| o.spec.as_ref().map(|s| &s.template),
    |o| o.spec.as_mut().map(|s| &mut s.template)
);
workload!(
    CronJob,
    "CronJob",
    "batch/v1",
    |o| o
        .spec
        .as_ref()
        .and_then(|s| s.job_template.spec.as_ref())
        .map(|s| &s.template),
    |o| o
        .spec
        .as_mut()
        .and_then(|s| s.job_template.spec.as_mut())
        .map(|s| &mut s.template)
);

/// What the stores keep of a workload: metadata, and the pod template only when opted in.
pub fn strip_workload<W: Workload>(o: &mut W) {
    strip_metadata(o.meta_mut());
    o.clear_status();
    if let Some(t) = o.template_mut() {
        strip_template(t);
    }
}

fn is_owned(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
        && meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CONTENT_HASH))
}

fn owned(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Owned {
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
    Owned {
        name: meta.name.clone().unwrap_or_default(),
        content_hash: annotation(CONTENT_HASH),
        unused_since: annotation(UNUSED_SINCE).and_then(|v| v.parse().ok()),
    }
}

fn reference(namespace: &str, c: &ConsumerRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(c.api_version.clone()),
        kind: Some(c.kind.clone()),
        name: Some(c.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: Some(c.uid.clone()).filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    }
}

fn class_reference(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("secrets-store.csi.x-k8s.io/v1".into()),
        kind: Some("SecretProviderClass".into()),
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    }
}

/// Where a sync's Events go: the workloads, else the pods (at most a few), and the class.
fn event_targets(namespace: &str, secret: &DesiredSecret) -> Vec<ObjectReference> {
    let workloads: Vec<&ConsumerRef> = secret
        .consumers
        .iter()
        .filter(|c| c.kind != "Pod")
        .collect();
    let chosen: Vec<&ConsumerRef> = if workloads.is_empty() {
        secret.consumers.iter().take(5).collect()
    } else {
        workloads.into_iter().take(5).collect()
    };
    chosen
        .into_iter()
        .map(|c| reference(namespace, c))
        .chain([class_reference(namespace, &secret.class)])
        .collect()
}

/// What happened to one desired Secret this round.
enum SecretOutcome {
    Unchanged,
    Written { rotated: bool },
    Failed { retry: Duration },
    Foreign,
}

fn jittered(base: Duration, jitter: f64) -> Duration {
    let spread = base.as_secs_f64() * jitter.clamp(0.0, 1.0) * fastrand::f64();
    base + Duration::from_secs_f64(spread)
}

pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = ns.name_any();
    let result =
        reconcile_namespace(&namespace, ns.metadata.deletion_timestamp.is_some(), &ctx).await;
    ctx.metrics.reconciled(started.elapsed());
    ctx.metrics.set_managed(
        "SecretProviderClass",
        ctx.stores
            .classes
            .state()
            .iter()
            .filter(|o| is_owned(&o.metadata))
            .count(),
    );
    ctx.metrics.set_managed(
        "Secret",
        ctx.stores
            .secrets
            .state()
            .iter()
            .filter(|o| is_owned(&o.metadata))
            .count(),
    );
    ctx.cache.prune();
    result
}

async fn reconcile_namespace(
    namespace: &str,
    terminating: bool,
    ctx: &Context,
) -> Result<Action, Error> {
    let consumers = ctx.consumers(namespace);
    let owned_classes = ctx.owned_classes(namespace);
    let owned_secrets = ctx.owned_secrets(namespace);
    if terminating || (consumers.is_empty() && owned_classes.is_empty() && owned_secrets.is_empty())
    {
        publish_report(namespace, &desired::Desired::default(), ctx).await?;
        return Ok(Action::await_change());
    }
    let now = now_unix();
    let settings = &ctx.loop_settings;
    let want = desired::desired(&desired::Inputs {
        namespace,
        consumers: &consumers,
        owned_classes: &owned_classes,
        owned_secrets: &owned_secrets,
        lookups: &ctx.lookups,
        settings: &ctx.settings,
        now,
        grace_seconds: settings.gc_grace.as_secs() as i64,
    });

    publish_report(namespace, &want, ctx).await?;
    let mut pods_told: HashMap<&str, usize> = HashMap::new();
    for r in &want.rejected {
        ctx.metrics.error("rejected");
        // Every workload hears about it; of a config's many pods, only a few.
        if r.consumer.kind == "Pod" {
            let told = pods_told.entry(r.reason.as_str()).or_default();
            *told += 1;
            if *told > 5 {
                continue;
            }
        }
        ctx.event(
            &reference(namespace, &r.consumer),
            EventType::Warning,
            "SyncFailed",
            format!("keywire will not materialise this config: {}", r.reason),
        )
        .await;
    }

    let classes: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &ctx.class_resource);
    for class in &want.classes {
        let object = class.object(namespace);
        let hash = object["metadata"]["annotations"][CONTENT_HASH]
            .as_str()
            .unwrap_or_default();
        if owned_classes
            .iter()
            .any(|o| o.name == class.name && o.content_hash.as_deref() == Some(hash))
        {
            continue;
        }
        if !owned_classes.iter().any(|o| o.name == class.name)
            && let Some(existing) =
                classes
                    .get_opt(&class.name)
                    .await
                    .map_err(kube_error(format!(
                        "reading SecretProviderClass {namespace}/{}",
                        class.name
                    )))?
            && !is_owned(&existing.metadata)
        {
            ctx.event(
                &class_reference(namespace, &class.name),
                EventType::Warning,
                "SyncFailed",
                format!(
                    "SecretProviderClass {} exists and is not keywire's (no {MANAGED_BY_LABEL}={MANAGED_BY} label and content hash); it is left untouched",
                    class.name
                ),
            )
            .await;
            continue;
        }
        let patch: DynamicObject = serde_json::from_value(object).map_err(|e| Error::Kube {
            what: format!("building SecretProviderClass {}", class.name),
            source: kube::Error::SerdeError(e),
        })?;
        classes
            .patch(
                &class.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_error(format!(
                "applying SecretProviderClass {namespace}/{}",
                class.name
            )))?;
        tracing::info!(namespace, class = %class.name, "SecretProviderClass applied");
    }

    let mut requeue = jittered(settings.rotation_interval, settings.jitter);
    for secret in &want.secrets {
        match sync_secret(namespace, secret, &owned_secrets, ctx).await? {
            SecretOutcome::Unchanged => ctx.metrics.sync("unchanged"),
            SecretOutcome::Written { rotated } => {
                ctx.metrics.sync(if rotated { "rotated" } else { "synced" })
            }
            SecretOutcome::Failed { retry } => {
                ctx.metrics.sync("failed");
                requeue = requeue.min(retry);
            }
            SecretOutcome::Foreign => ctx.metrics.sync("foreign"),
        }
    }

    collect(
        namespace,
        &want.collect_classes,
        &classes,
        "SecretProviderClass",
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    collect(namespace, &want.collect_secrets, &secrets, "Secret").await?;
    if let Some(due) = want.next_collection {
        requeue = requeue.min(Duration::from_secs((due - now).max(1) as u64));
    }
    Ok(Action::requeue(requeue))
}

/// Applies the namespace's policy Report when its content changed; deletes it when nothing in
/// the namespace is audited any more. Records the findings for the policies' status.
async fn publish_report(
    namespace: &str,
    want: &desired::Desired,
    ctx: &Context,
) -> Result<(), Error> {
    {
        let mut findings = ctx.findings.lock().unwrap_or_else(|p| p.into_inner());
        if want.audited == 0 {
            findings.remove(namespace);
        } else {
            findings.insert(
                namespace.to_string(),
                desired::Desired {
                    audited: want.audited,
                    findings: want.findings.clone(),
                    ..desired::Desired::default()
                },
            );
        }
    }
    let Some(resource) = &ctx.report_resource else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, resource);
    let last = ctx
        .reports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(namespace)
        .cloned();
    match report::report(namespace, want, now_unix()) {
        Some((object, hash)) => {
            if last.as_deref() == Some(hash.as_str()) {
                return Ok(());
            }
            let patch: DynamicObject = serde_json::from_value(object).map_err(|e| Error::Kube {
                what: format!("building the policy Report of {namespace}"),
                source: kube::Error::SerdeError(e),
            })?;
            api.patch(
                report::REPORT_NAME,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(kube_error(format!(
                "applying the policy Report of {namespace}"
            )))?;
            ctx.reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(namespace.to_string(), hash);
        }
        None => {
            if last.is_some() {
                match api
                    .delete(report::REPORT_NAME, &DeleteParams::default())
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => {
                        return Err(kube_error(format!(
                            "deleting the policy Report of {namespace}"
                        ))(e));
                    }
                }
                ctx.reports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(namespace);
            }
        }
    }
    Ok(())
}

async fn collect<K>(
    namespace: &str,
    steps: &[(String, Collect)],
    api: &Api<K>,
    kind: &str,
) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for (name, step) in steps {
        let annotations = match step {
            Collect::MarkUnused => json!({UNUSED_SINCE: now_unix().to_string()}),
            Collect::Unmark => json!({UNUSED_SINCE: null}),
            Collect::Delete => {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(
                        namespace,
                        kind,
                        name,
                        "deleted: unused for the whole grace period"
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(kube_error(format!("deleting {kind} {namespace}/{name}"))(e));
                    }
                }
                continue;
            }
        };
        let patch = json!({"metadata": {"annotations": annotations}});
        match api
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(GC_FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(kube_error(format!("marking {kind} {namespace}/{name}"))(e)),
        }
        tracing::info!(namespace, kind, name, step = ?step, "garbage collection");
    }
    Ok(())
}

async fn sync_secret(
    namespace: &str,
    secret: &DesiredSecret,
    owned_secrets: &[Owned],
    ctx: &Context,
) -> Result<SecretOutcome, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = owned_secrets.iter().find(|o| o.name == secret.name);
    if existing.is_none()
        && let Some(found) = api
            .get_metadata_opt(&secret.name)
            .await
            .map_err(kube_error(format!(
                "reading Secret {namespace}/{}",
                secret.name
            )))?
        && !is_owned(&found.metadata)
    {
        let note = format!(
            "Secret {} exists and is not keywire's (it lacks the {MANAGED_BY_LABEL}={MANAGED_BY} label or the {CONTENT_HASH} annotation); it is left untouched and not synced",
            secret.name
        );
        for target in event_targets(namespace, secret) {
            ctx.event(&target, EventType::Warning, "ForeignSecret", note.clone())
                .await;
        }
        return Ok(SecretOutcome::Foreign);
    }

    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for object in &secret.objects {
        let request = ObjectRequest {
            namespace: namespace.to_string(),
            vault: secret.keyvault.clone(),
            cloud_name: secret.cloud_name.clone(),
            object: object.clone(),
            identity: secret.identity.clone(),
        };
        match ctx.cache.get(&request).await {
            Ok((fetched, source)) => {
                if source == Source::Cache {
                    ctx.metrics.cache_hits.inc();
                }
                data.insert(object.file_name().to_string(), fetched.bytes);
            }
            Err(e) => {
                return Ok(failed(namespace, secret, &request, e, ctx).await);
            }
        }
    }
    let hash = content::content_hash(&data);
    let previous = existing.and_then(|o| o.content_hash.clone());
    if previous.as_deref() == Some(hash.as_str()) {
        return Ok(SecretOutcome::Unchanged);
    }

    let object = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                    (CONFIG_LABEL.to_string(), secret.class.clone()),
                ]
                .into(),
            ),
            annotations: Some([(CONTENT_HASH.to_string(), hash.clone())].into()),
            ..kube::api::ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    api.patch(
        &secret.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(kube_error(format!(
        "applying Secret {namespace}/{}",
        secret.name
    )))?;
    let rotated = previous.is_some();
    tracing::info!(namespace, secret = %secret.name, rotated, "synced Secret written");
    let (reason, note) = if rotated {
        (
            "Rotated",
            format!(
                "Secret {} updated: a value in Key Vault {} changed",
                secret.name, secret.keyvault
            ),
        )
    } else {
        (
            "Synced",
            format!(
                "Secret {} synced from Key Vault {} ({} objects)",
                secret.name,
                secret.keyvault,
                secret.objects.len()
            ),
        )
    };
    for target in event_targets(namespace, secret) {
        ctx.event(&target, EventType::Normal, reason, note.clone())
            .await;
    }
    if rotated {
        for workload in &secret.restart {
            restart(namespace, workload, ctx).await;
        }
    }
    Ok(SecretOutcome::Written { rotated })
}

async fn failed(
    namespace: &str,
    secret: &DesiredSecret,
    request: &ObjectRequest,
    e: VaultError,
    ctx: &Context,
) -> SecretOutcome {
    ctx.metrics.error(e.metric_reason());
    tracing::warn!(
        namespace,
        secret = %secret.name,
        object = %request.describe(),
        reason = e.metric_reason(),
        error = %e,
        "sync failed; the last good Secret is kept"
    );
    let note = format!(
        "Secret {} not synced (the last good value is kept): {e}",
        secret.name
    );
    for target in event_targets(namespace, secret) {
        ctx.event(&target, EventType::Warning, e.event_reason(), note.clone())
            .await;
    }
    SecretOutcome::Failed {
        retry: e.retry_after().unwrap_or(ctx.loop_settings.retry),
    }
}

/// `kubectl rollout restart`: stamp the workload's pod template.
async fn restart(namespace: &str, workload: &ConsumerRef, ctx: &Context) {
    let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
    let annotations = json!({RESTARTED_AT: stamp});
    let template = json!({"metadata": {"annotations": annotations}});
    let patch = match workload.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" => json!({"spec": {"template": template}}),
        "CronJob" => json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
        // A Job's template is immutable, and a ReplicaSet does not replace running pods.
        _ => return,
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let result = match workload.kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(ctx.client.clone(), namespace)
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        "StatefulSet" => Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace)
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        "DaemonSet" => Api::<DaemonSet>::namespaced(ctx.client.clone(), namespace)
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        _ => Api::<CronJob>::namespaced(ctx.client.clone(), namespace)
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    match result {
        Ok(()) => tracing::info!(namespace, workload = %workload, "restarted on rotation"),
        Err(e) => {
            tracing::warn!(namespace, workload = %workload, error = %error_chain(&e), "restart on rotation failed")
        }
    }
}

pub fn error_policy(_ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "reconcile failed; retrying");
    ctx.metrics.error("kubernetes");
    Action::requeue(ctx.loop_settings.retry)
}

/// The namespace an object lives in, as the reconcile key.
pub fn namespace_of<K: ResourceExt>(object: &K) -> Option<ObjectRef<Namespace>> {
    object.namespace().map(|ns| ObjectRef::new(&ns))
}

/// What the stores keep of any object's metadata: no managed fields, no last-applied copy.
pub fn strip_metadata(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What the stores keep of a pod (template) spec: only what the contract and the policy rules
/// read (ServiceAccount, container names, env, mounts, Secrets Store and projected volumes,
/// hostNetwork), so a thousand pods cost little memory.
pub fn strip_pod_spec(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    fn container(c: &Container) -> Container {
        Container {
            name: c.name.clone(),
            env: c.env.clone(),
            volume_mounts: c.volume_mounts.clone(),
            restart_policy: c.restart_policy.clone(),
            ..Container::default()
        }
    }
    let volumes = spec.volumes.take().map(|vs| {
        vs.into_iter()
            .filter(|v| v.csi.is_some() || v.projected.is_some())
            .collect::<Vec<_>>()
    });
    *spec = PodSpec {
        service_account_name: spec.service_account_name.take(),
        service_account: spec.service_account.take(),
        host_network: spec.host_network,
        containers: spec.containers.iter().map(container).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|cs| cs.iter().map(container).collect()),
        volumes,
        ..PodSpec::default()
    };
}

/// What the stores keep of a pod: its stripped spec and the phase of its status.
pub fn strip_pod(p: &mut Pod) {
    strip_metadata(&mut p.metadata);
    p.metadata.owner_references = None;
    if let Some(spec) = p.spec.as_mut() {
        strip_pod_spec(spec);
    }
    if let Some(s) = p.status.as_mut() {
        *s = k8s_openapi::api::core::v1::PodStatus {
            phase: s.phase.take(),
            ..Default::default()
        };
    }
}

/// Keeps a workload's pod template only when policy may have something to say about it: opted in
/// to keywire or to Azure Workload Identity, or with a Secrets Store CSI volume of its own.
/// Others keep their labels only (for `requireInjection`).
pub fn strip_template(template: &mut PodTemplateSpec) {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let relevant = labels.is_some_and(|l| {
        crate::core::annotations::is_opted_in(l)
            || crate::core::annotations::uses_azure_workload_identity(l)
    }) || template.spec.as_ref().is_some_and(|s| {
        s.volumes.iter().flatten().any(|v| {
            v.csi
                .as_ref()
                .is_some_and(|c| c.driver == crate::core::plan::CSI_DRIVER)
        })
    });
    if !relevant {
        template.spec = None;
        if let Some(m) = template.metadata.as_mut() {
            m.annotations = None;
        }
    } else if let Some(spec) = template.spec.as_mut() {
        strip_pod_spec(spec);
    }
}

/// Leaves nothing of a Secret's data in memory: only its metadata is compared.
pub fn strip_secret(secret: &mut Secret) {
    strip_metadata(&mut secret.metadata);
    secret.data = None;
    secret.string_data = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine;
    use crate::fixtures;
    use serde_json::json;

    /// The stores keep only what the contract and the rules read: the controller's verdict on a
    /// stripped pod is the verdict on the whole pod.
    #[test]
    fn stripped_pods_are_judged_as_whole_ones() {
        let state = fixtures::cluster(fixtures::NAMESPACE);
        let mut whole = fixtures::replica_pod(3);
        whole["spec"]["affinity"] = json!({"nodeAffinity": {}});
        let d = engine::decide(&whole, fixtures::NAMESPACE, &state, &Settings::default());
        crate::core::patch::apply(&mut whole, d.patch()).unwrap();
        let mut pod: Pod = serde_json::from_value(whole.clone()).unwrap();
        strip_pod(&mut pod);
        let stripped = serde_json::to_value(&pod).unwrap();
        assert!(stripped["spec"]["containers"][0].get("image").is_none());
        assert!(stripped["spec"].get("affinity").is_none());
        assert_eq!(
            stripped["spec"]["volumes"].as_array().unwrap().len(),
            2,
            "CSI and token only"
        );
        let s = Settings::default();
        assert_eq!(
            engine::judge(&stripped, fixtures::NAMESPACE, &state, &s),
            engine::judge(&whole, fixtures::NAMESPACE, &state, &s)
        );
        assert!(engine::judge(&stripped, fixtures::NAMESPACE, &state, &s).is_ok());
    }
}
