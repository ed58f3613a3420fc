//! Is an applied object healthy yet? kstatus's rules (sigs.k8s.io/cli-utils), which Flux's
//! `wait` and `healthChecks` use, over the object as the API server returns it.
//!
//! A pure function of one object's JSON, so that the wait loop (which polls the API server)
//! stays small and every rule is unit-tested here without a cluster. The message names what
//! is missing in the words a person checks with kubectl (`0 of 2 replicas available`).

use serde_json::Value;

/// An object's status, as kstatus computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Fully reconciled by its controller: what `wait` waits for.
    Current,
    /// Still being reconciled; the message says what is pending.
    InProgress(String),
    /// Its controller gave up (a failed Job, a Deployment past its progress deadline).
    Failed(String),
    /// Being deleted.
    Terminating,
}

impl Health {
    pub fn is_current(&self) -> bool {
        matches!(self, Health::Current)
    }
}

/// The health of `object` (a full object with `apiVersion`, `kind`, `metadata`, `status`).
pub fn health(object: &Value) -> Health {
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return Health::Terminating;
    }
    let generation = object["metadata"]["generation"].as_i64();
    let observed = object["status"]["observedGeneration"].as_i64();
    if let (Some(generation), Some(observed)) = (generation, observed) {
        if observed != generation {
            return Health::InProgress(format!(
                "observed generation {observed}, desired generation {generation}"
            ));
        }
    }
    // kstatus's standard conditions, honoured on every kind that sets them.
    if condition(object, "Stalled") == Some(true) {
        return Health::Failed(condition_message(object, "Stalled"));
    }
    if condition(object, "Reconciling") == Some(true) {
        return Health::InProgress(condition_message(object, "Reconciling"));
    }
    let group = object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/').map(|(g, _)| g))
        .unwrap_or("");
    match (group, object["kind"].as_str().unwrap_or("")) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("apps", "ReplicaSet") => replica_set(object),
        ("batch", "Job") => job(object),
        ("", "Pod") => pod(object),
        ("", "PersistentVolumeClaim") => match object["status"]["phase"].as_str() {
            Some("Bound") => Health::Current,
            phase => Health::InProgress(format!("phase {}, not Bound", phase.unwrap_or("unknown"))),
        },
        ("", "Service") => service(object),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(object),
        _ => generic(object),
    }
}

/// The status of condition `kind`: `Some(true)` for "True", `Some(false)` for anything else
/// present, `None` when absent.
fn condition(object: &Value, kind: &str) -> Option<bool> {
    find_condition(object, kind).map(|c| c["status"] == "True")
}

fn find_condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn condition_message(object: &Value, kind: &str) -> String {
    let Some(c) = find_condition(object, kind) else {
        return format!("no {kind} condition");
    };
    let reason = c["reason"].as_str().unwrap_or("");
    let message = c["message"].as_str().unwrap_or("");
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{kind}: {reason}: {message}"),
        (false, true) => format!("{kind}: {reason}"),
        (true, false) => format!("{kind}: {message}"),
        (true, true) => kind.to_string(),
    }
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn deployment(object: &Value) -> Health {
    let spec = &object["spec"];
    let status = &object["status"];
    let wanted = spec["replicas"].as_i64().unwrap_or(1);
    if let Some(progressing) = find_condition(object, "Progressing") {
        if progressing["reason"] == "ProgressDeadlineExceeded" {
            return Health::Failed(format!(
                "progress deadline exceeded: {}",
                progressing["message"].as_str().unwrap_or("")
            ));
        }
    }
    let updated = int(&status["updatedReplicas"]);
    let total = int(&status["replicas"]);
    let available = int(&status["availableReplicas"]);
    let ready = int(&status["readyReplicas"]);
    if spec["paused"] == true {
        return Health::InProgress("rollout paused".into());
    }
    if updated < wanted {
        return Health::InProgress(format!("{updated} of {wanted} replicas updated"));
    }
    if total > updated {
        return Health::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < wanted {
        return Health::InProgress(format!("{available} of {wanted} replicas available"));
    }
    if ready < wanted {
        return Health::InProgress(format!("{ready} of {wanted} replicas ready"));
    }
    Health::Current
}

fn stateful_set(object: &Value) -> Health {
    let spec = &object["spec"];
    let status = &object["status"];
    let wanted = spec["replicas"].as_i64().unwrap_or(1);
    let ready = int(&status["readyReplicas"]);
    let current = int(&status["currentReplicas"]);
    if ready < wanted {
        return Health::InProgress(format!("{ready} of {wanted} replicas ready"));
    }
    // OnDelete: pods are replaced by hand, so the controller never finishes a rollout.
    if spec["updateStrategy"]["type"] == "OnDelete" {
        return Health::Current;
    }
    let partition = spec["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0);
    if partition > 0 {
        let updated = int(&status["updatedReplicas"]);
        if updated < wanted - partition {
            return Health::InProgress(format!(
                "{updated} of {} replicas updated (partition {partition})",
                wanted - partition
            ));
        }
        return Health::Current;
    }
    if current < wanted {
        return Health::InProgress(format!(
            "{current} of {wanted} replicas at the current revision"
        ));
    }
    if status["currentRevision"] != status["updateRevision"] {
        return Health::InProgress("rolling update in progress".into());
    }
    Health::Current
}

fn daemon_set(object: &Value) -> Health {
    let status = &object["status"];
    let desired = int(&status["desiredNumberScheduled"]);
    let checks = [
        ("currentNumberScheduled", "scheduled"),
        ("updatedNumberScheduled", "updated"),
        ("numberAvailable", "available"),
        ("numberReady", "ready"),
    ];
    for (field, word) in checks {
        let have = int(&status[field]);
        if have < desired {
            return Health::InProgress(format!("{have} of {desired} pods {word}"));
        }
    }
    Health::Current
}

fn replica_set(object: &Value) -> Health {
    let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &object["status"];
    for (field, word) in [
        ("availableReplicas", "available"),
        ("readyReplicas", "ready"),
    ] {
        let have = int(&status[field]);
        if have < wanted {
            return Health::InProgress(format!("{have} of {wanted} replicas {word}"));
        }
    }
    Health::Current
}

fn job(object: &Value) -> Health {
    if condition(object, "Failed") == Some(true) {
        return Health::Failed(condition_message(object, "Failed"));
    }
    if condition(object, "Complete") == Some(true) {
        return Health::Current;
    }
    let status = &object["status"];
    Health::InProgress(format!(
        "not complete: {} active, {} succeeded, {} failed",
        int(&status["active"]),
        int(&status["succeeded"]),
        int(&status["failed"])
    ))
}

fn pod(object: &Value) -> Health {
    match object["status"]["phase"].as_str() {
        Some("Succeeded") => Health::Current,
        Some("Failed") => Health::Failed(
            object["status"]["message"]
                .as_str()
                .unwrap_or("pod failed")
                .to_string(),
        ),
        Some("Running") if condition(object, "Ready") == Some(true) => Health::Current,
        phase => Health::InProgress(format!("phase {}, not Ready", phase.unwrap_or("Pending"))),
    }
}

fn service(object: &Value) -> Health {
    if object["spec"]["type"] == "LoadBalancer"
        && object["status"]["loadBalancer"]["ingress"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        return Health::InProgress("no load balancer address yet".into());
    }
    Health::Current
}

fn crd(object: &Value) -> Health {
    if condition(object, "NamesAccepted") == Some(false) {
        return Health::Failed(condition_message(object, "NamesAccepted"));
    }
    match condition(object, "Established") {
        Some(true) => Health::Current,
        _ => Health::InProgress("not Established yet".into()),
    }
}

/// Any other kind: a `Ready` condition decides when there is one; without conditions an
/// object is Current once it exists (ConfigMaps, Secrets, RBAC objects, ...).
fn generic(object: &Value) -> Health {
    match condition(object, "Ready") {
        Some(true) | None => Health::Current,
        Some(false) => Health::InProgress(condition_message(object, "Ready")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "api", "namespace": "web", "generation": 2 },
            "spec": { "replicas": replicas },
            "status": status,
        })
    }

    #[test]
    fn a_deployment_is_current_once_every_replica_is_updated_available_and_ready() {
        let rolled_out = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "availableReplicas": 2, "readyReplicas": 2 });
        assert_eq!(health(&deployment(2, rolled_out)), Health::Current);
        let starting = json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "availableReplicas": 0 });
        assert_eq!(
            health(&deployment(2, starting)),
            Health::InProgress("0 of 2 replicas available".into())
        );
        let old = json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2 });
        assert_eq!(
            health(&deployment(2, old)),
            Health::InProgress("1 old replicas pending termination".into())
        );
    }

    #[test]
    fn an_unobserved_generation_is_in_progress_whatever_the_rest_says() {
        let stale = json!({ "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
            "availableReplicas": 2, "readyReplicas": 2 });
        assert_eq!(
            health(&deployment(2, stale)),
            Health::InProgress("observed generation 1, desired generation 2".into())
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed() {
        let status = json!({ "observedGeneration": 2, "conditions": [{ "type": "Progressing",
            "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"api-1\" has timed out progressing." }] });
        assert!(matches!(health(&deployment(2, status)), Health::Failed(_)));
    }

    #[test]
    fn jobs_are_current_when_complete_and_failed_when_failed() {
        let job = |conditions: Value| {
            json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "j" },
                "status": { "conditions": conditions, "active": 1 } })
        };
        assert_eq!(
            health(&job(json!([{ "type": "Complete", "status": "True" }]))),
            Health::Current
        );
        assert_eq!(
            health(&job(
                json!([{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded" }])
            )),
            Health::Failed("Failed: BackoffLimitExceeded".into())
        );
        assert_eq!(
            health(&job(json!([]))),
            Health::InProgress("not complete: 1 active, 0 succeeded, 0 failed".into())
        );
    }

    #[test]
    fn crds_pvcs_pods_and_generic_kinds() {
        let crd = |status: &str| {
            json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": "widgets.example.com" },
                "status": { "conditions": [{ "type": "Established", "status": status }] } })
        };
        assert_eq!(health(&crd("True")), Health::Current);
        assert!(!health(&crd("False")).is_current());
        let pvc = json!({ "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": "data" }, "status": { "phase": "Pending" } });
        assert_eq!(
            health(&pvc),
            Health::InProgress("phase Pending, not Bound".into())
        );
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
            "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] } });
        assert_eq!(health(&pod), Health::Current);
        let config_map =
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "c" } });
        assert_eq!(health(&config_map), Health::Current);
        let not_ready = json!({ "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": { "name": "w" }, "status": { "conditions": [{ "type": "Ready",
            "status": "False", "reason": "Waiting", "message": "backend down" }] } });
        assert_eq!(
            health(&not_ready),
            Health::InProgress("Ready: Waiting: backend down".into())
        );
        let deleting = json!({ "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c", "deletionTimestamp": "2026-01-01T00:00:00Z" } });
        assert_eq!(health(&deleting), Health::Terminating);
    }

    #[test]
    fn stateful_sets_and_daemon_sets_wait_for_every_pod() {
        let sts = json!({ "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": { "name": "db", "generation": 1 }, "spec": { "replicas": 3 },
            "status": { "observedGeneration": 1, "readyReplicas": 3, "currentReplicas": 3,
                "currentRevision": "db-1", "updateRevision": "db-2" } });
        assert_eq!(
            health(&sts),
            Health::InProgress("rolling update in progress".into())
        );
        let ds = json!({ "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": { "name": "agent" },
            "status": { "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                "updatedNumberScheduled": 2, "numberAvailable": 1, "numberReady": 1 } });
        assert_eq!(
            health(&ds),
            Health::InProgress("1 of 2 pods available".into())
        );
    }
}
