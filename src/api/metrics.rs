//! Prometheus text exposition, written by hand: a handful of families does not need a
//! metrics registry, and this keeps the values in one place (the state).

use crate::reconcile::Engine;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;
use std::sync::Arc;

pub async fn render(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    let cache_bytes = engine.git_cache_bytes();
    let text = engine.state().read(|st| {
        let mut out = String::new();
        let families: [(&str, &str, &str); 7] = [
            (
                "gitopsd_source_fetches_total",
                "counter",
                "Fetch attempts per source.",
            ),
            (
                "gitopsd_source_fetch_errors_total",
                "counter",
                "Failed fetch attempts per source.",
            ),
            (
                "gitopsd_source_unchanged_total",
                "counter",
                "Polls that found the remote unchanged and downloaded nothing.",
            ),
            (
                "gitopsd_source_fetch_duration_seconds_sum",
                "counter",
                "Total time spent fetching and packing, per source.",
            ),
            (
                "gitopsd_source_last_fetch_duration_seconds",
                "gauge",
                "Duration of the last fetch, per source.",
            ),
            (
                "gitopsd_source_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful fetch, 0 if none.",
            ),
            (
                "gitopsd_source_ready",
                "gauge",
                "1 when the last fetch succeeded.",
            ),
        ];
        for (i, (name, kind, help)) in families.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in st.sources.values() {
                let m = &s.metrics;
                let value = match i {
                    0 => m.fetches_total as f64,
                    1 => m.fetch_errors_total as f64,
                    2 => m.unchanged_total as f64,
                    3 => m.fetch_seconds_sum,
                    4 => m.last_fetch_seconds,
                    5 => m.last_success_timestamp,
                    _ => f64::from(u8::from(s.last_error.is_none() && s.artifact.is_some())),
                };
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",name=\"{}\",kind=\"{}\"}} {value}",
                    escape(&s.namespace),
                    escape(&s.name),
                    escape(&s.kind)
                );
            }
        }
        let name = "gitopsd_source_git_cache_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Size on disk of a git source's cache repository.\n# TYPE {name} gauge"
        );
        for s in st.sources.values() {
            if let Some(bytes) = cache_bytes.get(&format!("{}/{}", s.namespace, s.name)) {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",name=\"{}\",kind=\"{}\"}} {bytes}",
                    escape(&s.namespace),
                    escape(&s.name),
                    escape(&s.kind)
                );
            }
        }
        let name = "gitopsd_kustomization_ready";
        let _ = writeln!(
            out,
            "# HELP {name} 1 when the last render and apply succeeded.\n# TYPE {name} gauge"
        );
        for k in st.kustomizations.values() {
            let v = u8::from(k.last_error.is_none() && k.last_applied_revision.is_some());
            let _ = writeln!(
                out,
                "{name}{{namespace=\"{}\",configuration=\"{}\",name=\"{}\"}} {v}",
                escape(&k.namespace),
                escape(&k.configuration),
                escape(&k.name)
            );
        }
        out
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
