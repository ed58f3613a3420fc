//! `gitopsd status` and `gitopsd reconcile`: talk to the running daemon over its HTTP API.

use super::{Output, ServerArgs};
use crate::api::StatusDocument;
use anyhow::{bail, Context};

fn base_url(args: &ServerArgs) -> anyhow::Result<String> {
    if let Some(s) = &args.server {
        let s = s.trim_end_matches('/');
        return Ok(if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        });
    }
    let listen = match &args.config {
        Some(path) => crate::config::load(path)
            .map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?
            .listen
            .to_string(),
        None => "127.0.0.1:9090".to_string(),
    };
    Ok(format!("http://{listen}"))
}

pub fn status(args: &ServerArgs, output: Output) -> anyhow::Result<i32> {
    let url = format!("{}/api/v1/status", base_url(args)?);
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot reach the daemon at {url}; is gitopsd running?"))?
        .body_mut()
        .read_to_string()?;
    if output == Output::Json {
        println!("{body}");
        return Ok(0);
    }
    let doc: StatusDocument = serde_json::from_str(&body).context("unexpected status document")?;
    for s in &doc.sources {
        let ready = ready(&s.conditions);
        println!(
            "source {}/{}\tready={ready}\trevision={}\t{}",
            s.namespace,
            s.name,
            s.revision.as_ref().map(|r| r.as_str()).unwrap_or("-"),
            s.last_error.as_deref().unwrap_or("")
        );
    }
    for k in &doc.kustomizations {
        let ready = ready(&k.conditions);
        println!(
            "kustomization {}/{}/{}\tready={ready}\trevision={}\tobjects={}\t{}",
            k.namespace,
            k.configuration,
            k.name,
            k.last_applied_revision
                .as_ref()
                .map(|r| r.as_str())
                .unwrap_or("-"),
            k.objects,
            k.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

pub fn reconcile(args: &ServerArgs, name: &str) -> anyhow::Result<i32> {
    let url = format!("{}/api/v1/reconcile/{name}", base_url(args)?);
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let agent: ureq::Agent = config.into();
    let mut response = agent
        .post(&url)
        .send_empty()
        .with_context(|| format!("cannot reach the daemon at {url}; is gitopsd running?"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    if !status.is_success() {
        bail!("{}", text.trim());
    }
    println!("{}", text.trim());
    Ok(0)
}

/// The Ready condition's status, as kubectl shows it.
fn ready(conditions: &[crate::state::Condition]) -> &str {
    conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .map_or("Unknown", |c| c.status.as_str())
}
