//! The fan-in in front of Key Vault: one read per (vault, object, version, identity) per rotation
//! interval, however many pods and templates share it, with concurrent askers waiting for the
//! one read in flight; and a per-vault hold after a 429, for as long as its Retry-After said.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::controller::keyvault::{Fetched, KeyVault, ObjectRequest, VaultError};

struct Slot {
    value: tokio::sync::Mutex<Option<(Instant, Fetched)>>,
}

pub struct ReadCache {
    vault: Arc<dyn KeyVault>,
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Vault name -> not before.
    holds: Mutex<HashMap<String, Instant>>,
}

/// Where a value came from, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    KeyVault,
}

impl ReadCache {
    pub fn new(vault: Arc<dyn KeyVault>, ttl: Duration) -> Self {
        ReadCache {
            vault,
            ttl,
            slots: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    value: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    fn held(&self, vault: &str) -> Option<Duration> {
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds
            .get(vault)
            .and_then(|until| until.checked_duration_since(Instant::now()))
    }

    /// The object, from the cache when read within the interval, else from Key Vault.
    pub async fn get(&self, request: &ObjectRequest) -> Result<(Fetched, Source), VaultError> {
        let slot = self.slot(&request.cache_key());
        // Held across the read: whoever asks for the same key meanwhile waits for this read.
        let mut value = slot.value.lock().await;
        if let Some((at, fetched)) = value.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok((fetched.clone(), Source::Cache));
        }
        if let Some(left) = self.held(&request.vault) {
            return Err(VaultError::Throttled {
                vault: request.vault.clone(),
                retry_after: left,
            });
        }
        match self.vault.fetch(request).await {
            Ok(fetched) => {
                *value = Some((Instant::now(), fetched.clone()));
                Ok((fetched, Source::KeyVault))
            }
            Err(e) => {
                if let Some(wait) = e.retry_after() {
                    let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
                    holds.insert(request.vault.clone(), Instant::now() + wait);
                }
                Err(e)
            }
        }
    }

    /// Forgets entries nobody asked for in two intervals (configs that went away).
    pub fn prune(&self) {
        let horizon = self.ttl * 2;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|_, slot| match slot.value.try_lock() {
            Ok(v) => v.as_ref().is_some_and(|(at, _)| at.elapsed() < horizon),
            Err(_) => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::desired::FetchIdentity;
    use crate::core::annotations::{KeyVaultObject, ObjectType};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts reads; answers 429 while `throttle` is set. A fault that no real vault can be
    /// made to produce on demand in a unit test.
    struct Counting {
        reads: AtomicUsize,
        throttle: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl KeyVault for Counting {
        async fn fetch(&self, request: &ObjectRequest) -> Result<Fetched, VaultError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.throttle.load(Ordering::SeqCst) {
                return Err(VaultError::Throttled {
                    vault: request.vault.clone(),
                    retry_after: Duration::from_secs(60),
                });
            }
            Ok(Fetched {
                bytes: request.object.name.as_bytes().to_vec(),
                version: "v1".into(),
            })
        }
    }

    fn request(sa: &str, name: &str) -> ObjectRequest {
        ObjectRequest {
            namespace: "prod".into(),
            vault: "kv".into(),
            cloud_name: "AzurePublicCloud".into(),
            object: KeyVaultObject {
                object_type: ObjectType::Secret,
                name: name.into(),
                version: None,
                alias: None,
            },
            identity: FetchIdentity::Workload {
                tenant_id: "t".into(),
                client_id: "c".into(),
                service_account: sa.into(),
            },
        }
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_read_per_interval() {
        let vault = Arc::new(Counting {
            reads: AtomicUsize::new(0),
            throttle: false.into(),
        });
        let cache = Arc::new(ReadCache::new(vault.clone(), Duration::from_secs(60)));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&request("app", "db")).await })
            })
            .collect();
        let mut sources = Vec::new();
        for t in tasks {
            let (fetched, source) = t.await.unwrap().unwrap();
            assert_eq!(fetched.bytes, b"db");
            sources.push(source);
        }
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);
        assert_eq!(
            sources.iter().filter(|s| **s == Source::KeyVault).count(),
            1
        );
        // Another identity or object is another read.
        cache.get(&request("other", "db")).await.unwrap();
        cache.get(&request("app", "api")).await.unwrap();
        assert_eq!(vault.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn entries_expire_with_the_interval() {
        let vault = Arc::new(Counting {
            reads: AtomicUsize::new(0),
            throttle: false.into(),
        });
        let cache = ReadCache::new(vault.clone(), Duration::from_millis(50));
        cache.get(&request("app", "db")).await.unwrap();
        cache.get(&request("app", "db")).await.unwrap();
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (_, source) = cache.get(&request("app", "db")).await.unwrap();
        assert_eq!(source, Source::KeyVault);
        assert_eq!(vault.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_429_holds_the_whole_vault_for_its_retry_after() {
        let vault = Arc::new(Counting {
            reads: AtomicUsize::new(0),
            throttle: true.into(),
        });
        let cache = ReadCache::new(vault.clone(), Duration::from_secs(60));
        let e = cache.get(&request("app", "db")).await.unwrap_err();
        assert!(matches!(e, VaultError::Throttled { .. }));
        vault.throttle.store(false, Ordering::SeqCst);
        // Any object of that vault waits out the hold without a request.
        let e = cache.get(&request("app", "api")).await.unwrap_err();
        match e {
            VaultError::Throttled { retry_after, .. } => {
                assert!(
                    retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(vault.reads.load(Ordering::SeqCst), 1);
    }
}
