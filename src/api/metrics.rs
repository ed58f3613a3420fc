//! `GET /metrics`: the engine's prometheus-client registry, in the OpenMetrics text format
//! (which Prometheus reads given this content type; the counters' `_total` names are the same
//! in the classic format).

use crate::reconcile::reload::Daemon;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::Arc;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn render(State(daemon): State<Arc<Daemon>>) -> impl IntoResponse {
    let engine = daemon.engine();
    let text = engine.state().read(|st| engine.metrics().encode(st));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
