//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several control
//! plane replicas exactly one writes status (all of them serve config and certificates).
//!
//! [`Elector`] is the pure state machine: given the Lease as read (or none), it says
//! what to write. Expiry is judged like client-go does, on the local monotonic clock: a
//! foreign holder's lease is expired when its record has not changed for
//! `leaseDurationSeconds` since this replica first saw it, so clock skew between
//! replicas does not matter. Writes go through [`LeaseApi`] with optimistic concurrency
//! (`resourceVersion`): of two replicas racing for an expired lease, one gets a conflict.
//! [`run_election`] drives it and publishes "am I the leader" on a watch channel.

use std::future::Future;
use std::time::Duration;

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// The fields of a Lease that election uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty when released.
    pub holder: String,
    pub duration: Duration,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

/// What to do after reading the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create(LeaseRecord),
    /// Write this record (renewal or takeover).
    Update(LeaseRecord),
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// The election state of one replica.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    duration: Duration,
    observed: Option<(LeaseRecord, Instant)>,
    leading_until: Option<Instant>,
}

impl Elector {
    pub fn new(identity: impl Into<String>, duration: Duration) -> Self {
        Elector {
            identity: identity.into(),
            duration,
            observed: None,
            leading_until: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Decides the next write from the Lease as read (`None`: it does not exist).
    pub fn step(&mut self, current: Option<&LeaseRecord>, now: Instant, wall: Timestamp) -> Step {
        let Some(cur) = current else {
            return Step::Create(LeaseRecord {
                holder: self.identity.clone(),
                duration: self.duration,
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: 0,
            });
        };
        let seen_at = match &self.observed {
            Some((rec, at)) if rec == cur => *at,
            _ => {
                self.observed = Some((cur.clone(), now));
                now
            }
        };
        if cur.holder == self.identity {
            return Step::Update(LeaseRecord {
                renew_time: Some(wall),
                duration: self.duration,
                ..cur.clone()
            });
        }
        let expired = cur.holder.is_empty() || now >= seen_at + cur.duration;
        if expired {
            Step::Update(LeaseRecord {
                holder: self.identity.clone(),
                duration: self.duration,
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: cur.transitions + 1,
            })
        } else {
            self.leading_until = None;
            Step::Follow {
                holder: cur.holder.clone(),
            }
        }
    }

    /// The write decided at `now` succeeded: this replica leads until the lease would
    /// expire for the others.
    pub fn succeeded(&mut self, now: Instant) {
        self.leading_until = Some(now + self.duration);
    }

    /// The write failed (conflict, API error): stop leading at once rather than risk two
    /// writers.
    pub fn failed(&mut self) {
        self.leading_until = None;
    }

    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|t| now < t)
    }

    /// The record that releases the lease (when held by this replica).
    pub fn release(&self, current: &LeaseRecord) -> Option<LeaseRecord> {
        (current.holder == self.identity).then(|| LeaseRecord {
            holder: String::new(),
            duration: Duration::from_secs(1),
            ..current.clone()
        })
    }
}

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("lease {0} was changed by another replica")]
    Conflict(String),
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: ::kube::Error,
    },
}

/// Reading and writing the Lease; `String` is the `resourceVersion` read.
pub trait LeaseApi: Send + Sync {
    fn get(&self)
        -> impl Future<Output = Result<Option<(LeaseRecord, String)>, LeaseError>> + Send;
    fn create(&self, record: &LeaseRecord) -> impl Future<Output = Result<(), LeaseError>> + Send;
    fn replace(
        &self,
        record: &LeaseRecord,
        resource_version: &str,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// [`LeaseApi`] on the API server.
#[derive(Clone)]
pub struct KubeLease {
    api: Api<Lease>,
    name: String,
}

impl KubeLease {
    pub fn new(client: Client, namespace: &str, name: impl Into<String>) -> Self {
        KubeLease {
            api: Api::namespaced(client, namespace),
            name: name.into(),
        }
    }

    fn to_lease(&self, r: &LeaseRecord, resource_version: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: resource_version.map(str::to_string),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(r.holder.clone()),
                lease_duration_seconds: Some(r.duration.as_secs().max(1) as i32),
                acquire_time: r.acquire_time.map(MicroTime),
                renew_time: r.renew_time.map(MicroTime),
                lease_transitions: Some(r.transitions),
                ..Default::default()
            }),
        }
    }

    fn err(&self, e: ::kube::Error) -> LeaseError {
        match e {
            ::kube::Error::Api(s) if s.code == 409 => LeaseError::Conflict(self.name.clone()),
            source => LeaseError::Api {
                name: self.name.clone(),
                source,
            },
        }
    }
}

impl LeaseApi for KubeLease {
    async fn get(&self) -> Result<Option<(LeaseRecord, String)>, LeaseError> {
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        let spec = lease.spec.unwrap_or_default();
        let record = LeaseRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        };
        Ok(Some((
            record,
            lease.metadata.resource_version.unwrap_or_default(),
        )))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseError> {
        self.api
            .create(&PostParams::default(), &self.to_lease(record, None))
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn replace(
        &self,
        record: &LeaseRecord,
        resource_version: &str,
    ) -> Result<(), LeaseError> {
        self.api
            .replace(
                &self.name,
                &PostParams::default(),
                &self.to_lease(record, Some(resource_version)),
            )
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// One round: read, decide, write. Returns whether this replica leads afterwards.
pub async fn elect_once<L: LeaseApi>(api: &L, elector: &mut Elector) -> bool {
    let now = Instant::now();
    let wall = Timestamp::now();
    let result = match api.get().await {
        Ok(current) => {
            let rv = current.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
            match elector.step(current.as_ref().map(|(r, _)| r), now, wall) {
                Step::Create(r) => api.create(&r).await.map(|_| true),
                Step::Update(r) => api.replace(&r, &rv).await.map(|_| true),
                Step::Follow { .. } => Ok(false),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => elector.succeeded(now),
        Ok(false) => elector.failed(),
        Err(e) => {
            warn!(error = %e, "leader election round failed");
            elector.failed();
        }
    }
    elector.is_leader(Instant::now())
}

/// Runs election rounds every `retry` and publishes leadership on `leader`; when every
/// receiver is gone, releases the lease (if held) and returns.
pub async fn run_election<L: LeaseApi>(
    api: L,
    mut elector: Elector,
    retry: Duration,
    leader: watch::Sender<bool>,
) {
    loop {
        let leading = elect_once(&api, &mut elector).await;
        leader.send_if_modified(|was| {
            if *was != leading {
                info!(identity = elector.identity(), leading, "leadership changed");
                *was = leading;
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = leader.closed() => {
                if let Ok(Some((cur, rv))) = api.get().await {
                    if let Some(released) = elector.release(&cur) {
                        let _ = api.replace(&released, &rv).await;
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    const D: Duration = Duration::from_secs(15);

    #[tokio::test(start_paused = true)]
    async fn creates_renews_and_follows() {
        let mut a = Elector::new("a", D);
        let now = Instant::now();
        let Step::Create(rec) = a.step(None, now, wall()) else {
            panic!("create expected")
        };
        assert_eq!(rec.holder, "a");
        a.succeeded(now);
        assert!(a.is_leader(now));
        let Step::Update(renewed) = a.step(Some(&rec), now, wall()) else {
            panic!("renewal expected")
        };
        assert_eq!(renewed.holder, "a");
        assert_eq!(renewed.transitions, 0);

        let mut b = Elector::new("b", D);
        assert_eq!(
            b.step(Some(&rec), now, wall()),
            Step::Follow { holder: "a".into() }
        );
        assert!(!b.is_leader(now));
    }

    #[tokio::test(start_paused = true)]
    async fn takes_over_only_after_the_lease_went_unrenewed_for_its_duration() {
        let held = LeaseRecord {
            holder: "a".into(),
            duration: D,
            acquire_time: Some(wall()),
            renew_time: Some(wall()),
            transitions: 4,
        };
        let mut b = Elector::new("b", D);
        let t0 = Instant::now();
        assert!(matches!(
            b.step(Some(&held), t0, wall()),
            Step::Follow { .. }
        ));
        tokio::time::advance(D - Duration::from_secs(1)).await;
        assert!(matches!(
            b.step(Some(&held), Instant::now(), wall()),
            Step::Follow { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        let Step::Update(taken) = b.step(Some(&held), Instant::now(), wall()) else {
            panic!("takeover expected")
        };
        assert_eq!(taken.holder, "b");
        assert_eq!(taken.transitions, 5);

        // A renewal seen in between restarts the clock.
        let mut c = Elector::new("c", D);
        c.step(Some(&held), Instant::now(), wall());
        tokio::time::advance(D - Duration::from_secs(1)).await;
        let renewed = LeaseRecord {
            renew_time: Some("2026-01-01T00:00:10Z".parse().unwrap()),
            ..held.clone()
        };
        c.step(Some(&renewed), Instant::now(), wall());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(
            c.step(Some(&renewed), Instant::now(), wall()),
            Step::Follow { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn released_lease_is_taken_at_once_and_leadership_lapses() {
        let mut a = Elector::new("a", D);
        let rec = LeaseRecord {
            holder: "a".into(),
            duration: D,
            acquire_time: None,
            renew_time: None,
            transitions: 0,
        };
        let released = a.release(&rec).unwrap();
        assert_eq!(released.holder, "");
        assert!(Elector::new("x", D).release(&rec).is_none());
        let mut b = Elector::new("b", D);
        assert!(matches!(
            b.step(Some(&released), Instant::now(), wall()),
            Step::Update(r) if r.holder == "b"
        ));
        a.succeeded(Instant::now());
        tokio::time::advance(D).await;
        assert!(
            !a.is_leader(Instant::now()),
            "not renewed: no longer leader"
        );
        a.succeeded(Instant::now());
        a.failed();
        assert!(!a.is_leader(Instant::now()));
    }
}

#[cfg(test)]
mod replica_tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory Lease with resourceVersion checks, shared by two replicas.
    #[derive(Default)]
    struct Memory {
        lease: Mutex<Option<(LeaseRecord, u64)>>,
    }

    impl LeaseApi for &Memory {
        async fn get(&self) -> Result<Option<(LeaseRecord, String)>, LeaseError> {
            Ok(self
                .lease
                .lock()
                .unwrap()
                .as_ref()
                .map(|(r, v)| (r.clone(), v.to_string())))
        }
        async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseError> {
            let mut l = self.lease.lock().unwrap();
            if l.is_some() {
                return Err(LeaseError::Conflict("l".into()));
            }
            *l = Some((record.clone(), 1));
            Ok(())
        }
        async fn replace(&self, record: &LeaseRecord, rv: &str) -> Result<(), LeaseError> {
            let mut l = self.lease.lock().unwrap();
            match l.as_mut() {
                Some((r, v)) if v.to_string() == rv => {
                    *r = record.clone();
                    *v += 1;
                    Ok(())
                }
                _ => Err(LeaseError::Conflict("l".into())),
            }
        }
    }

    const D: Duration = Duration::from_secs(15);
    const RETRY: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn two_replicas_never_lead_together_and_the_survivor_takes_over() {
        let mem = Memory::default();
        let mut a = Elector::new("a", D);
        let mut b = Elector::new("b", D);
        assert!(elect_once(&&mem, &mut a).await);
        assert!(!elect_once(&&mem, &mut b).await);
        for _ in 0..20 {
            tokio::time::advance(RETRY).await;
            let la = elect_once(&&mem, &mut a).await;
            let lb = elect_once(&&mem, &mut b).await;
            assert!(la && !lb, "a keeps renewing, b follows");
        }
        // a stops (crash): b takes over once the lease went unrenewed for D, not before.
        let mut waited = Duration::ZERO;
        loop {
            tokio::time::advance(RETRY).await;
            waited += RETRY;
            if elect_once(&&mem, &mut b).await {
                break;
            }
            assert!(waited <= D + RETRY, "b must take over");
        }
        assert!(waited >= D - RETRY, "took over after {waited:?}");
        assert!(!a.is_leader(Instant::now()), "a's own lease has lapsed");
        let (rec, _) = (&mem).get().await.unwrap().unwrap();
        assert_eq!(rec.holder, "b");
        assert_eq!(rec.transitions, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn run_election_publishes_leadership_and_releases_on_shutdown() {
        let mem: &'static Memory = Box::leak(Box::default());
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(run_election(mem, Elector::new("a", D), RETRY, tx));
        rx.changed().await.unwrap();
        assert!(*rx.borrow());
        drop(rx);
        task.await.unwrap();
        let (rec, _) = mem.get().await.unwrap().unwrap();
        assert_eq!(rec.holder, "", "released");
    }
}
