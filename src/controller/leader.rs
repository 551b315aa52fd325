//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! the holder renews every `renew_interval`; anyone may take a Lease whose holder has not renewed
//! for `lease_duration`; every write carries the resourceVersion it read, so only one replica wins
//! each race. A leader that cannot renew for `lease_duration` steps down on its own, before
//! anyone else may take over. On shutdown the holder releases the Lease at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use crate::controller::keyvault::error_chain;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's holder identity (the pod name, plus a random suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    pub retry_interval: Duration,
}

/// What one look at the Lease decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds it: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Follow { holder: String },
}

/// The pure rule: whether `me` may hold `lease` at `now`.
pub fn claim(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Claim {
    let Some(spec) = lease else {
        return Claim::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Claim::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    if holder.is_empty() || now.as_second() >= last + duration {
        Claim::TakeOver
    } else {
        Claim::Follow { holder }
    }
}

fn spec_for(me: &str, config: &LeaseConfig, acquired: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(Timestamp::now())),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// One attempt to hold the Lease; `Ok(true)` while this replica leads.
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let me = config.identity.as_str();
    let current = api.get_opt(&config.name).await?;
    let now = Timestamp::now();
    match claim(current.as_ref().and_then(|l| l.spec.as_ref()), me, now) {
        Claim::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec_for(me, config, now, 0)),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(true)
        }
        Claim::Renew => {
            let mut lease = current.unwrap_or_default();
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds = Some(config.lease_duration.as_secs().max(1) as i32);
            }
            api.replace(&config.name, &PostParams::default(), &lease)
                .await?;
            Ok(true)
        }
        Claim::TakeOver => {
            let mut lease = current.unwrap_or_default();
            let transitions = lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0)
                + 1;
            lease.spec = Some(spec_for(me, config, now, transitions));
            api.replace(&config.name, &PostParams::default(), &lease)
                .await?;
            tracing::info!(lease = %config.name, "took over the leader Lease");
            Ok(true)
        }
        Claim::Follow { .. } => Ok(false),
    }
}

/// Gives the Lease up (on shutdown), so a standby takes over without waiting for it to expire.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %config.name, "released the leader Lease"),
        Err(e) => tracing::warn!(error = %error_chain(&e), "could not release the leader Lease"),
    }
}

/// Runs the election until `stop` turns true, publishing leadership on `leading`.
pub async fn run(
    client: kube::Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let outcome = try_hold(&api, &config).await;
        let now = tokio::time::Instant::now();
        let leads = match outcome {
            Ok(true) => {
                last_renewed = Some(now);
                true
            }
            Ok(false) => {
                last_renewed = None;
                false
            }
            Err(e) => {
                // A conflict means another replica wrote first; anything else, keep leading only
                // while the last renewal is younger than the Lease, so two never lead at once.
                tracing::debug!(error = %error_chain(&e), "Lease update failed");
                last_renewed.is_some_and(|t| now.duration_since(t) < config.lease_duration)
            }
        };
        if *leading.borrow() != leads {
            tracing::info!(leading = leads, identity = %config.identity, "leadership changed");
            let _ = leading.send(leads);
        }
        let wait = if leads {
            config.renew_interval
        } else {
            config.retry_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    if *leading.borrow() {
        let _ = leading.send(false);
        release(&api, &config).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_or_expired() {
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(claim(None, "a", at(100)), Claim::Create);
        assert_eq!(
            claim(Some(&spec(Some("a"), 95, 15)), "a", at(100)),
            Claim::Renew
        );
        assert_eq!(
            claim(Some(&spec(Some("b"), 95, 15)), "a", at(100)),
            Claim::Follow { holder: "b".into() }
        );
        assert_eq!(
            claim(Some(&spec(Some("b"), 95, 15)), "a", at(110)),
            Claim::TakeOver
        );
        // Released: no holder.
        assert_eq!(
            claim(Some(&spec(None, 99, 1)), "a", at(100)),
            Claim::TakeOver
        );
    }
}
