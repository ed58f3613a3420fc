//! Timing: jittered intervals, exponential backoff after failures, dependency order.

use crate::config::Kustomization;
use rand::Rng;
use std::time::Duration;

/// The first retry after a failure waits this long; each further failure doubles it, up to
/// the object's retryInterval.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// `interval` plus up to 5% random jitter, so that many sources configured with the same
/// interval do not poll their servers in lockstep.
pub fn jittered(interval: Duration) -> Duration {
    let extra = interval.as_secs_f64() * 0.05 * rand::rng().random::<f64>();
    interval + Duration::from_secs_f64(extra)
}

/// Delay before the next attempt after `failures` consecutive failures (1 = first failure).
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = FIRST_RETRY.saturating_mul(1u32 << exp);
    jittered(base.min(cap))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Target, DEFAULT_INTERVAL};

    fn k(name: &str, deps: &[&str]) -> Kustomization {
        Kustomization {
            name: name.into(),
            path: String::new(),
            prune: false,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            interval: DEFAULT_INTERVAL,
            retry_interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_INTERVAL,
            wait: false,
            force: false,
            suspend: false,
            target: Target::None,
        }
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
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(10);
        assert!(backoff(1, cap) >= FIRST_RETRY && backoff(1, cap) < FIRST_RETRY * 2);
        assert!(backoff(2, cap) >= FIRST_RETRY * 2);
        assert!(backoff(30, cap) <= cap + cap / 10);
    }
}
