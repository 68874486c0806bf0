//! One labeller among several server replicas: a `coordination.k8s.io/v1` Lease, created when
//! absent, taken over only when expired, renewed by its holder, every write guarded by the
//! Lease's `resourceVersion` (a 409 means another replica won).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

use crate::api::{status_code, RateLimiter};
use crate::metrics::Metrics;

/// The Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// This process's identity (pod name or host name and pid).
    pub identity: String,
    /// How long a holder keeps it without renewing.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often the holder renews, and a follower looks.
    pub fn renew_every(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(200))
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let until = renewed.0.as_millisecond().saturating_add(secs * 1000);
    now.as_millisecond() >= until
}

/// One round: take, keep or observe the lease. Returns whether this process holds it now.
pub async fn try_acquire(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    limiter: &RateLimiter,
    metrics: &Metrics,
) -> Result<bool, kube::Error> {
    limiter.acquire().await;
    let secs = i32::try_from(cfg.duration.as_secs().max(1)).unwrap_or(15);
    let current = api.get_opt(&cfg.name).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        limiter.acquire().await;
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => {
                metrics.api_error(status_code(&e));
                Err(e)
            }
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
    if !mine && !expired(&spec, Timestamp::now()) {
        return Ok(false);
    }
    let mut new = spec.clone();
    new.renew_time = Some(now_micro());
    new.lease_duration_seconds = Some(secs);
    if !mine {
        new.holder_identity = Some(cfg.identity.clone());
        new.acquire_time = Some(now_micro());
        new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    lease.spec = Some(new);
    limiter.acquire().await;
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            if !mine {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, previous = ?spec.holder_identity, "took the labeller lease");
            }
            Ok(true)
        }
        Err(e) if status_code(&e) == Some(409) => Ok(false),
        Err(e) => {
            metrics.api_error(status_code(&e));
            Err(e)
        }
    }
}
