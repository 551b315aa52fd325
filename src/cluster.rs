//! `Lookups` backed by the API server, for the webhook and the controller alike: metadata-only
//! watch caches of ServiceAccounts and Namespaces (stripped to name, namespace and
//! labels/annotations) with a direct GET on a miss, and the parsed KeywirePolicies. Subscribers
//! hear which namespace changed (`changes`), so the controller can reconcile it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::core::lookup::{Lookups, NamespaceInfo, SecretProviderClassInfo, ServiceAccountInfo};
use crate::core::policy::{self, Policy};

/// Direct-GET answers are kept this long, so a burst of pods for a new ServiceAccount costs one GET.
const MISS_TTL: Duration = Duration::from_secs(30);
const MISS_CAPACITY: usize = 4096;

type Classes = HashMap<(String, String), SecretProviderClassInfo>;

/// Answers of direct GETs, remembered for a while until the watch catches up: at most
/// `MISS_CAPACITY` entries, stale ones swept when it is full.
struct Remembered<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + std::hash::Hash, V: Clone> Remembered<K, V> {
    fn new(ttl: Duration) -> Self {
        Remembered {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// What is remembered for `key`, if it is still fresh.
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ?Sized,
    {
        let entries = self.entries.lock().ok()?;
        let (at, value) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    fn insert(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MISS_CAPACITY {
                entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            if entries.len() < MISS_CAPACITY {
                entries.insert(key, (Instant::now(), value));
            }
        }
    }
}

/// The Secrets Store CSI driver's API group and version.
const SPC_GROUP_VERSION: &str = "secrets-store.csi.x-k8s.io/v1";

/// What changed in the caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A ServiceAccount in this namespace.
    ServiceAccount(String),
    /// This Namespace (its labels select policies).
    Namespace(String),
    /// The set of KeywirePolicies.
    Policies,
}

#[derive(Clone)]
pub struct KubeLookups {
    changes: tokio::sync::broadcast::Sender<Change>,
    client: kube::Client,
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    policy_store: Option<Store<DynamicObject>>,
    policies: Arc<ArcSwap<Vec<Policy>>>,
    /// ServiceAccounts fetched on a cache miss (`None`: absent), answered until the watch catches up.
    misses: Arc<Remembered<(String, String), Option<ServiceAccountInfo>>>,
    /// Namespaces fetched on a cache miss, answered until the watch catches up.
    fetched_namespaces: Arc<Remembered<String, NamespaceInfo>>,
    /// SecretProviderClasses, stripped to provider and parameters (policy judges what a CSI
    /// volume points at). Empty while the driver's CRD is not installed.
    classes: Arc<RwLock<Classes>>,
    classes_ready: tokio::sync::watch::Receiver<bool>,
    /// SecretProviderClasses a direct GET just found absent (keywire's own inline class before
    /// the controller writes it, typically): not fetched again for `CLASS_MISS_TTL`, so a burst
    /// of pods costs one GET, not one per review. The watch still adds a class the moment it
    /// exists.
    missing_classes: Arc<Remembered<(String, String), ()>>,
}

/// How long a SecretProviderClass found absent is not fetched again.
const CLASS_MISS_TTL: Duration = Duration::from_secs(2);

fn spc_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
}

fn spc_info(object: &DynamicObject) -> Option<SecretProviderClassInfo> {
    let value = serde_json::to_value(object).ok()?;
    Some(SecretProviderClassInfo::from_object(&value, ""))
}

/// Keeps `classes` equal to the cluster's SecretProviderClasses, for as long as the process runs.
/// Without the CRD it reports ready with none, and looks again every minute.
async fn watch_classes(
    client: kube::Client,
    classes: Arc<RwLock<Classes>>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    loop {
        match client.list_api_group_resources(SPC_GROUP_VERSION).await {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.name == "secretproviderclasses") =>
            {
                break;
            }
            Ok(_) | Err(_) => {
                tracing::info!(
                    "SecretProviderClass API not served; policy sees no class until it is"
                );
                let _ = ready.send(true);
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
    let api = Api::<DynamicObject>::all_with(client, &spc_api_resource());
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut fresh: Option<Classes> = None;
    let key = |c: &SecretProviderClassInfo| (c.namespace.clone(), c.name.clone());
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "SecretProviderClass watch error; retrying");
                continue;
            }
        };
        let mut classes = classes.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Init => fresh = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                if let (Some(map), Some(c)) = (fresh.as_mut(), spc_info(&o)) {
                    map.insert(key(&c), c);
                }
            }
            watcher::Event::InitDone => {
                if let Some(map) = fresh.take() {
                    *classes = map;
                }
                let _ = ready.send(true);
            }
            watcher::Event::Apply(o) => {
                if let Some(c) = spc_info(&o) {
                    classes.insert(key(&c), c);
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(c) = spc_info(&o) {
                    classes.remove(&key(&c));
                }
            }
        }
    }
}

fn strip<K>(meta: &mut PartialObjectMeta<K>, keep_labels: bool) {
    let m = &mut meta.metadata;
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
    if !keep_labels {
        m.labels = None;
    }
    if keep_labels {
        m.annotations = None;
    }
}

fn sa_info(meta: &PartialObjectMeta<ServiceAccount>) -> ServiceAccountInfo {
    ServiceAccountInfo {
        namespace: meta.metadata.namespace.clone().unwrap_or_default(),
        name: meta.metadata.name.clone().unwrap_or_default(),
        annotations: meta.metadata.annotations.clone().unwrap_or_default(),
    }
}

impl KubeLookups {
    /// Starts the watches; they run until the process exits. Await `ready` before serving.
    /// With `watch_policies`, KeywirePolicies are watched too (their CRD must be installed).
    pub fn start(client: kube::Client, watch_policies: bool) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let (sa_store, sa_writer) = reflector::store();
        let sa_stream = watcher::watcher(
            Api::<PartialObjectMeta<ServiceAccount>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|m| strip(m, false))
        .reflect(sa_writer)
        .applied_objects();
        let tx = changes.clone();
        tokio::spawn(async move {
            futures::pin_mut!(sa_stream);
            while let Some(event) = sa_stream.next().await {
                match event {
                    Ok(sa) => {
                        let _ = tx.send(Change::ServiceAccount(
                            sa.metadata.namespace.clone().unwrap_or_default(),
                        ));
                    }
                    Err(e) => tracing::warn!(error = %e, "ServiceAccount watch error; retrying"),
                }
            }
        });

        let (ns_store, ns_writer) = reflector::store();
        let ns_stream = watcher::watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|m| strip(m, true))
        .reflect(ns_writer)
        .applied_objects();
        let tx = changes.clone();
        tokio::spawn(async move {
            futures::pin_mut!(ns_stream);
            while let Some(event) = ns_stream.next().await {
                match event {
                    Ok(ns) => {
                        let _ = tx.send(Change::Namespace(
                            ns.metadata.name.clone().unwrap_or_default(),
                        ));
                    }
                    Err(e) => tracing::warn!(error = %e, "Namespace watch error; retrying"),
                }
            }
        });

        let policies = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let policy_store = watch_policies.then(|| {
            let ar = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("keywire.dev", "v1alpha1", policy::KIND),
                "keywirepolicies",
            );
            let writer = reflector::store::Writer::new(ar.clone());
            let store = writer.as_reader();
            let stream = watcher::watcher(
                Api::<DynamicObject>::all_with(client.clone(), &ar),
                watcher::Config::default(),
            )
            .default_backoff()
            .reflect(writer);
            let (reader, target) = (store.clone(), policies.clone());
            let tx = changes.clone();
            tokio::spawn(async move {
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "KeywirePolicy watch error; retrying");
                        continue;
                    }
                    // Rebuilt whole on every change: policies are few and change rarely.
                    let parsed: Vec<Policy> = reader
                        .state()
                        .iter()
                        .filter_map(|o| {
                            let value = serde_json::to_value(o.as_ref()).ok()?;
                            Policy::from_object(&value)
                                .map_err(|e| tracing::warn!(error = %e, "ignoring a KeywirePolicy"))
                                .ok()
                        })
                        .collect();
                    target.store(Arc::new(parsed));
                    let _ = tx.send(Change::Policies);
                }
            });
            store
        });

        let classes = Arc::new(RwLock::new(HashMap::new()));
        let (ready_tx, classes_ready) = tokio::sync::watch::channel(false);
        tokio::spawn(watch_classes(client.clone(), classes.clone(), ready_tx));

        KubeLookups {
            changes,
            client,
            service_accounts: sa_store,
            namespaces: ns_store,
            policy_store,
            policies,
            misses: Arc::new(Remembered::new(MISS_TTL)),
            fetched_namespaces: Arc::new(Remembered::new(MISS_TTL)),
            classes,
            classes_ready,
            missing_classes: Arc::new(Remembered::new(CLASS_MISS_TTL)),
        }
    }

    /// Resolves once both caches hold a full initial list.
    pub async fn ready(&self) -> bool {
        let policies_ready = match &self.policy_store {
            Some(store) => store.wait_until_ready().await.is_ok(),
            None => true,
        };
        let mut classes = self.classes_ready.clone();
        self.service_accounts.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
            && policies_ready
            && classes.wait_for(|ready| *ready).await.is_ok()
    }

    /// Makes sure a Namespace the cache has not seen yet is answered with its real labels (one
    /// direct GET), so policy selection never takes a new namespace for one without labels.
    pub async fn prefetch_namespace(&self, name: &str) -> bool {
        if self.namespaces.get(&ObjectRef::new(name)).is_some() {
            return false;
        }
        let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
        match api.get_opt(name).await {
            Ok(Some(mut ns)) => {
                strip(&mut ns, true);
                self.fetched_namespaces.insert(
                    name.to_string(),
                    NamespaceInfo {
                        name: name.to_string(),
                        labels: ns.metadata.labels.unwrap_or_default(),
                    },
                );
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(namespace = name, error = %e, "Namespace GET failed"),
        }
        true
    }

    /// Makes sure a SecretProviderClass created a moment ago is known: one direct GET.
    pub async fn prefetch_secret_provider_class(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_string(), name.to_string());
        if self
            .classes
            .read()
            .map(|c| c.contains_key(&key))
            .unwrap_or(false)
        {
            return false;
        }
        if self.missing_classes.get(&key).is_some() {
            return false;
        }
        let api = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &spc_api_resource(),
        );
        match api.get_opt(name).await {
            Ok(Some(o)) => {
                if let (Some(c), Ok(mut classes)) = (spc_info(&o), self.classes.write()) {
                    classes.insert(key, c);
                }
            }
            Ok(None) => self.missing_classes.insert(key, ()),
            Err(e) => {
                tracing::debug!(namespace, name, error = %e, "SecretProviderClass GET failed")
            }
        }
        true
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo> {
        self.service_accounts
            .get(&ObjectRef::new(name).within(namespace))
            .map(|m| sa_info(&m))
    }

    /// Makes sure a ServiceAccount the cache has not seen yet (created a moment ago) is answered:
    /// one direct GET, remembered briefly.
    pub async fn prefetch_service_account(&self, namespace: &str, name: &str) -> bool {
        if self.cached(namespace, name).is_some() {
            return false;
        }
        let key = (namespace.to_string(), name.to_string());
        if self.misses.get(&key).is_some() {
            return false;
        }
        let api =
            Api::<PartialObjectMeta<ServiceAccount>>::namespaced(self.client.clone(), namespace);
        let found = match api.get_opt(name).await {
            Ok(found) => found.map(|m| sa_info(&m)),
            Err(e) => {
                tracing::warn!(namespace, name, error = %e, "ServiceAccount GET failed");
                None
            }
        };
        self.misses.insert(key, found);
        true
    }
}

impl KubeLookups {
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Every KeywirePolicy as stored: name, generation, and why keywire ignores it (if it does).
    pub fn policy_objects(&self) -> Vec<(String, i64, Option<String>)> {
        let Some(store) = &self.policy_store else {
            return Vec::new();
        };
        store
            .state()
            .iter()
            .map(|o| {
                let name = o.metadata.name.clone().unwrap_or_default();
                let generation = o.metadata.generation.unwrap_or_default();
                let error = serde_json::to_value(o.as_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|v| Policy::from_object(&v).map(|_| ()))
                    .err();
                (name, generation, error)
            })
            .collect()
    }

    /// Every change the caches see from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

impl Lookups for KubeLookups {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccountInfo> {
        self.cached(namespace, name).or_else(|| {
            self.misses
                .get(&(namespace.to_string(), name.to_string()))
                .flatten()
        })
    }

    fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        self.namespaces
            .get(&ObjectRef::new(name))
            .map(|m| NamespaceInfo {
                name: m.metadata.name.clone().unwrap_or_default(),
                labels: m.metadata.labels.clone().unwrap_or_default(),
            })
            .or_else(|| self.fetched_namespaces.get(name))
    }

    fn secret_provider_class(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<SecretProviderClassInfo> {
        self.classes
            .read()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn policies(&self) -> Arc<Vec<Policy>> {
        self.policies.load_full()
    }
}
