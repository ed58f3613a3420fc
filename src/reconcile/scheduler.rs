//! When each object of a configuration runs next: a pure state machine, no I/O, no timers.
//!
//! The engine's loop asks [`Schedule::next_wake`] how long to sleep, tells it about triggers,
//! asks what is due at the instant it woke ([`Schedule::source_due`],
//! [`Schedule::due_kustomizations`]), runs those, and hands back each run's [`Action`]. Time
//! comes in as an `Instant` parameter and randomness (jitter) from the schedule's own `Rng`, so
//! unit tests drive it with made-up instants and a seeded generator (kube-runtime's controller
//! keeps the same split between reconcile functions, which return an action, and the
//! scheduler, which turns actions into due times).
//!
//! The rules, as gitopsd has always applied them:
//! - after a success the object runs again after its `interval` plus up to 5% jitter, so that
//!   many sources with the same interval do not poll their servers in lockstep;
//! - after `n` consecutive failures it waits 2 s, 4 s, 8 s, ... capped at `retryInterval`,
//!   jittered the same way;
//! - a trigger (`gitopsd reconcile`) runs the whole configuration at the next wake, and any
//!   number of triggers before that wake make one pass;
//! - a kustomization runs at once when its source has a revision it has not tried yet;
//! - kustomizations run in dependency order; one that waited for a dependency runs as soon as
//!   that dependency succeeds, without sitting out its own backoff;
//! - a suspended object never runs and never wakes the loop.

use crate::config::{Configuration, Kustomization};
use crate::source::Revision;
use rand::Rng;
use std::time::{Duration, Instant};

/// The first retry after a failure waits this long; each further failure doubles it, up to
/// the object's retryInterval.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// What a reconcile function asks of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// It succeeded: run again after this long (jittered).
    RequeueAfter(Duration),
    /// It failed: retry with exponential backoff, capped at the object's retryInterval.
    Backoff,
    /// It failed in a way retrying cannot fix until something outside changes (settings that
    /// cannot work as given): wait the whole retryInterval at once, rather than retrying at
    /// 2 s, 4 s, ... first.
    Stalled,
    /// A dependency is not ready at the current revision: retry like a failure, or as soon as
    /// the dependency succeeds.
    AwaitDependency,
    /// It was interrupted (gitopsd is stopping): nothing about the object changed.
    Abandoned,
}

impl Action {
    pub fn requeue_after(interval: Duration) -> Action {
        Action::RequeueAfter(interval)
    }
}

/// `interval` plus up to 5% random jitter.
pub fn jittered(interval: Duration, rng: &mut impl Rng) -> Duration {
    let extra = interval.as_secs_f64() * 0.05 * rng.random::<f64>();
    interval + Duration::from_secs_f64(extra)
}

/// Delay before the next attempt after `failures` consecutive failures (1 = first failure).
pub fn backoff(failures: u32, cap: Duration, rng: &mut impl Rng) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = FIRST_RETRY.saturating_mul(1u32 << exp);
    jittered(base.min(cap), rng)
}

/// Kustomization indices in an order where every dependency comes before its dependents.
/// The config loader has rejected cycles and unknown names; anything left unresolved here is
/// appended in declaration order rather than dropped.
pub fn dependency_order(ks: &[Kustomization]) -> Vec<usize> {
    let mut order = Vec::with_capacity(ks.len());
    let mut placed = vec![false; ks.len()];
    while order.len() < ks.len() {
        let before = order.len();
        for (i, k) in ks.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let ready = k.depends_on.iter().all(|d| {
                ks.iter()
                    .position(|o| &o.name == d)
                    .is_none_or(|j| placed[j])
            });
            if ready {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            order.extend((0..ks.len()).filter(|i| !placed[*i]));
            break;
        }
    }
    order
}

/// `due` (in dependency order) split into waves that may run at the same time: a
/// kustomization goes one wave after the last of its dependencies that is also due, so a
/// wave never holds a kustomization together with one it depends on. A thousand independent
/// kustomizations are one wave; a chain A→B→C is three.
pub fn waves(ks: &[Kustomization], due: &[usize]) -> Vec<Vec<usize>> {
    let mut wave_of: Vec<Option<usize>> = vec![None; ks.len()];
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for &i in due {
        let wave = ks[i]
            .depends_on
            .iter()
            .filter_map(|d| ks.iter().position(|o| &o.name == d))
            .filter_map(|j| wave_of[j])
            .map(|w| w + 1)
            .max()
            .unwrap_or(0);
        wave_of[i] = Some(wave);
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push(i);
    }
    waves
}

/// One object's timing.
#[derive(Debug, Clone)]
struct Slot {
    retry_interval: Duration,
    suspended: bool,
    due: Instant,
    failures: u32,
}

impl Slot {
    fn new(retry_interval: Duration, suspended: bool, now: Instant) -> Slot {
        Slot {
            retry_interval,
            suspended,
            due: now,
            failures: 0,
        }
    }

    fn finish(&mut self, action: Action, now: Instant, rng: &mut impl Rng) {
        match action {
            Action::RequeueAfter(after) => {
                self.failures = 0;
                self.due = now + jittered(after, rng);
            }
            Action::Backoff | Action::AwaitDependency => {
                self.failures = self.failures.saturating_add(1);
                self.due = now + backoff(self.failures, self.retry_interval, rng);
            }
            Action::Stalled => {
                self.failures = self.failures.saturating_add(1);
                self.due = now + jittered(self.retry_interval, rng);
            }
            Action::Abandoned => {}
        }
    }
}

#[derive(Debug, Clone)]
struct KustomizationSlot {
    slot: Slot,
    /// Indices of the kustomizations it depends on.
    depends_on: Vec<usize>,
    /// The revision it last tried: a new one runs at once, a failed one waits its backoff.
    attempted: Option<Revision>,
    /// Its last run waited for a dependency.
    waiting: bool,
}

/// The timing of one configuration: its source and its kustomizations.
#[derive(Debug)]
pub struct Schedule<R> {
    source: Slot,
    kustomizations: Vec<KustomizationSlot>,
    order: Vec<usize>,
    /// A trigger arrived since the last pass.
    forced: bool,
    rng: R,
}

impl<R: Rng> Schedule<R> {
    /// Everything is due at `now`: a start syncs at once.
    pub fn new(c: &Configuration, now: Instant, rng: R) -> Schedule<R> {
        let source = Slot::new(c.source.retry_interval, c.suspend || c.source.suspend, now);
        let kustomizations = c
            .kustomizations
            .iter()
            .map(|k| KustomizationSlot {
                slot: Slot::new(k.retry_interval, c.suspend || k.suspend, now),
                depends_on: k
                    .depends_on
                    .iter()
                    .filter_map(|d| c.kustomizations.iter().position(|o| &o.name == d))
                    .collect(),
                attempted: None,
                waiting: false,
            })
            .collect();
        Schedule {
            source,
            kustomizations,
            order: dependency_order(&c.kustomizations),
            forced: false,
            rng,
        }
    }

    /// When the loop must wake next, with no trigger; `None` when everything is suspended
    /// (only a trigger or shutdown wakes it then, and a trigger runs nothing).
    pub fn next_wake(&self) -> Option<Instant> {
        std::iter::once(&self.source)
            .chain(self.kustomizations.iter().map(|k| &k.slot))
            .filter(|s| !s.suspended)
            .map(|s| s.due)
            .min()
    }

    /// A trigger arrived: the next pass runs everything that is not suspended.
    pub fn trigger(&mut self) {
        self.forced = true;
    }

    pub fn source_due(&self, now: Instant) -> bool {
        !self.source.suspended && (self.forced || now >= self.source.due)
    }

    pub fn source_finished(&mut self, action: Action, now: Instant) {
        self.source.finish(action, now, &mut self.rng);
    }

    /// The kustomizations to run now, in dependency order, given the revision of the source's
    /// current artifact. Marks each as having attempted that revision.
    pub fn due_kustomizations(&mut self, now: Instant, current: Option<&Revision>) -> Vec<usize> {
        let mut due = Vec::new();
        for &i in &self.order {
            let k = &mut self.kustomizations[i];
            if k.slot.suspended {
                continue;
            }
            let new_revision = current.is_some() && k.attempted.as_ref() != current;
            if self.forced || new_revision || now >= k.slot.due {
                k.attempted = current.cloned();
                due.push(i);
            }
        }
        due
    }

    /// A kustomization finished; `index` as returned by [`Self::due_kustomizations`].
    pub fn kustomization_finished(&mut self, index: usize, action: Action, now: Instant) {
        let Some(k) = self.kustomizations.get_mut(index) else {
            return;
        };
        k.slot.finish(action, now, &mut self.rng);
        k.waiting = action == Action::AwaitDependency;
        if matches!(action, Action::RequeueAfter(_)) {
            // Whoever waited for this one may go now.
            for other in &mut self.kustomizations {
                if other.waiting && other.depends_on.contains(&index) {
                    other.slot.due = now;
                }
            }
        }
    }

    /// Suspensions changed at run time (`gitopsd suspend` / `resume`): a suspended object
    /// stops running; a resumed one keeps its due time, which has usually passed, so it runs at
    /// the next wake as Flux runs a resumed object at once. `kustomizations` is by index.
    pub fn set_suspended(&mut self, source: bool, kustomizations: &[bool]) {
        self.source.suspended = source;
        for (k, suspended) in self.kustomizations.iter_mut().zip(kustomizations) {
            k.slot.suspended = *suspended;
        }
    }

    /// The pass that a trigger forced is over.
    pub fn pass_finished(&mut self) {
        self.forced = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Target, DEFAULT_INTERVAL};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn k(name: &str, deps: &[&str]) -> Kustomization {
        Kustomization {
            name: name.into(),
            path: String::new(),
            prune: false,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            interval: Duration::from_secs(300),
            retry_interval: Duration::from_secs(60),
            timeout: DEFAULT_INTERVAL,
            wait: false,
            force: false,
            suspend: false,
            target: Target::None,
            target_namespace: None,
            post_build: Default::default(),
        }
    }

    fn configuration(ks: Vec<Kustomization>) -> Configuration {
        let yaml = r#"
configurations:
  - name: web
    source: { kind: git, url: "https://example.com/fleet", interval: 10m, retryInterval: 1m }
"#;
        let mut settings = crate::config::load_str(
            yaml,
            std::path::Path::new("gitopsd.yaml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let mut c = settings.configurations.remove(0);
        c.kustomizations = ks;
        c
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(9)
    }

    fn revision(hex: &str) -> Revision {
        Revision(format!("main@sha1:{hex}"))
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_stalled_failure_waits_the_whole_retry_interval_at_once() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut slot = Slot::new(Duration::from_secs(600), false, t0);
        slot.finish(Action::Stalled, t0, &mut rng);
        assert!(
            slot.due >= t0 + Duration::from_secs(600),
            "{:?}",
            slot.due - t0
        );
        assert!(
            slot.due <= t0 + Duration::from_secs(630),
            "{:?}",
            slot.due - t0
        );
        let mut retrying = Slot::new(Duration::from_secs(600), false, t0);
        retrying.finish(Action::Backoff, t0, &mut rng);
        assert!(retrying.due <= t0 + Duration::from_secs(3));
    }

    #[test]
    fn independent_kustomizations_share_a_wave_and_a_chain_is_one_per_step() {
        let ks = vec![
            k("c", &["b"]),
            k("a", &[]),
            k("b", &["a"]),
            k("x", &[]),
            k("y", &["x"]),
        ];
        let due = dependency_order(&ks);
        assert_eq!(waves(&ks, &due), vec![vec![1, 3], vec![2, 4], vec![0]]);
        // A dependency that is not due this pass does not hold its dependent back a wave.
        assert_eq!(waves(&ks, &[2, 0]), vec![vec![2], vec![0]]);
        assert_eq!(waves(&ks, &[0]), vec![vec![0]]);
    }

    #[test]
    fn dependencies_come_first() {
        let ks = vec![
            k("apps", &["infra", "crds"]),
            k("infra", &["crds"]),
            k("crds", &[]),
        ];
        let names: Vec<_> = dependency_order(&ks)
            .into_iter()
            .map(|i| ks[i].name.clone())
            .collect();
        assert_eq!(names, ["crds", "infra", "apps"]);
    }

    #[test]
    fn jitter_stays_within_five_percent() {
        let mut rng = rng();
        let interval = Duration::from_secs(600);
        let samples: Vec<_> = (0..1000).map(|_| jittered(interval, &mut rng)).collect();
        assert!(samples
            .iter()
            .all(|d| *d >= interval && *d <= interval * 105 / 100));
        // Spread over the range, not stuck at one end.
        assert!(samples.iter().any(|d| *d > interval * 104 / 100));
        assert!(samples.iter().any(|d| *d < interval * 101 / 100));
        // Seeded: the same sequence every time.
        let mut again = StdRng::seed_from_u64(9);
        assert_eq!(jittered(interval, &mut again), samples[0]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut rng = rng();
        let cap = Duration::from_secs(10);
        let within = |d: Duration, base: Duration| d >= base && d <= base * 105 / 100;
        assert!(within(backoff(1, cap, &mut rng), FIRST_RETRY));
        assert!(within(backoff(2, cap, &mut rng), FIRST_RETRY * 2));
        assert!(within(backoff(3, cap, &mut rng), FIRST_RETRY * 4));
        assert!(within(backoff(4, cap, &mut rng), cap));
        // No overflow however long it keeps failing.
        assert!(within(backoff(u32::MAX, cap, &mut rng), cap));
    }

    #[test]
    fn source_is_due_at_start_then_after_its_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&configuration(vec![]), t0, rng());
        assert!(s.source_due(t0));
        assert_eq!(s.next_wake(), Some(t0));
        s.source_finished(Action::requeue_after(10 * MIN), t0);
        let wake = s.next_wake().unwrap();
        assert!(wake >= t0 + 10 * MIN && wake <= t0 + 10 * MIN * 105 / 100);
        assert!(!s.source_due(t0 + 9 * MIN));
        assert!(s.source_due(wake));
    }

    #[test]
    fn failures_back_off_and_a_success_resets() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&configuration(vec![]), t0, rng());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            s.source_finished(Action::Backoff, now);
            let wake = s.next_wake().unwrap();
            waits.push(wake - now);
            now = wake;
        }
        // 2, 4, 8, 16, 32 s, then the 1 m retryInterval caps it.
        for (wait, base) in waits.iter().zip([2u64, 4, 8, 16, 32, 60, 60, 60]) {
            let base = Duration::from_secs(base);
            assert!(*wait >= base && *wait <= base * 105 / 100, "{waits:?}");
        }
        s.source_finished(Action::requeue_after(10 * MIN), now);
        s.source_finished(Action::Backoff, now);
        assert!(
            s.next_wake().unwrap() - now < FIRST_RETRY * 2,
            "reset to 2 s"
        );
    }

    #[test]
    fn triggers_coalesce_into_one_pass() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&configuration(vec![k("app", &[])]), t0, rng());
        s.source_finished(Action::requeue_after(10 * MIN), t0);
        assert_eq!(s.due_kustomizations(t0, None), vec![0]);
        s.kustomization_finished(0, Action::requeue_after(5 * MIN), t0);
        s.pass_finished();

        let t1 = t0 + MIN;
        assert!(!s.source_due(t1));
        s.trigger();
        s.trigger();
        s.trigger();
        assert!(s.source_due(t1));
        s.source_finished(Action::requeue_after(10 * MIN), t1);
        assert_eq!(s.due_kustomizations(t1, None), vec![0]);
        s.kustomization_finished(0, Action::requeue_after(5 * MIN), t1);
        s.pass_finished();
        // Three triggers, one pass: nothing is due right after it.
        assert!(!s.source_due(t1));
        assert!(s.due_kustomizations(t1, None).is_empty());
    }

    #[test]
    fn a_new_revision_runs_kustomizations_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&configuration(vec![k("app", &[])]), t0, rng());
        let r1 = revision("1");
        assert_eq!(s.due_kustomizations(t0, Some(&r1)), vec![0]);
        s.kustomization_finished(0, Action::Backoff, t0);
        // Failed at r1: waits its backoff at r1 ...
        let soon = t0 + Duration::from_secs(1);
        assert!(s.due_kustomizations(soon, Some(&r1)).is_empty());
        // ... but a new revision runs at once.
        let r2 = revision("2");
        assert_eq!(s.due_kustomizations(soon, Some(&r2)), vec![0]);
    }

    #[test]
    fn dependents_wait_for_their_dependency_and_go_when_it_succeeds() {
        let t0 = Instant::now();
        let ks = vec![k("apps", &["infra"]), k("infra", &[])];
        let mut s = Schedule::new(&configuration(ks), t0, rng());
        let r1 = revision("1");
        // Dependency order: infra (1) before apps (0).
        assert_eq!(s.due_kustomizations(t0, Some(&r1)), vec![1, 0]);
        s.kustomization_finished(1, Action::Backoff, t0);
        s.kustomization_finished(0, Action::AwaitDependency, t0);
        // Both back off (2 s): nothing is due a second later.
        let soon = t0 + Duration::from_secs(1);
        assert!(s.due_kustomizations(soon, Some(&r1)).is_empty());
        // infra succeeds then (say a trigger ran it): apps goes at the same instant, without
        // sitting out the rest of its backoff.
        s.kustomization_finished(1, Action::requeue_after(5 * MIN), soon);
        assert_eq!(s.due_kustomizations(soon, Some(&r1)), vec![0]);
        // A dependent that failed on its own account is not hurried.
        s.kustomization_finished(0, Action::Backoff, soon);
        s.kustomization_finished(1, Action::requeue_after(5 * MIN), soon);
        assert!(s.due_kustomizations(soon, Some(&r1)).is_empty());
    }

    #[test]
    fn suspended_objects_never_run_nor_wake() {
        let t0 = Instant::now();
        let mut suspended = k("app", &[]);
        suspended.suspend = true;
        let mut c = configuration(vec![suspended]);
        c.source.suspend = true;
        let mut s = Schedule::new(&c, t0, rng());
        assert_eq!(s.next_wake(), None);
        s.trigger();
        assert!(!s.source_due(t0 + 100 * MIN));
        assert!(s
            .due_kustomizations(t0 + 100 * MIN, Some(&revision("1")))
            .is_empty());
    }

    #[test]
    fn an_abandoned_run_changes_nothing() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&configuration(vec![]), t0, rng());
        s.source_finished(Action::Abandoned, t0 + MIN);
        assert_eq!(s.next_wake(), Some(t0));
    }
}
