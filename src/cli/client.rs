//! `gitopsd status`, `gitopsd events` and `gitopsd reconcile`: talk to the running daemon over
//! its HTTP API.

use super::{Output, ServerArgs};
use crate::api::StatusDocument;
use crate::config::SecretValue;
use crate::escape;
use anyhow::{bail, Context};

/// Where the daemon is and the token it wants.
struct Daemon {
    base_url: String,
    token: Option<String>,
}

impl Daemon {
    fn locate(args: &ServerArgs) -> anyhow::Result<Daemon> {
        let settings = match &args.config {
            Some(path) => Some(
                crate::config::load(path)
                    .map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?,
            ),
            None => None,
        };
        let base_url = match (&args.server, &settings) {
            (Some(s), _) => {
                let s = s.trim_end_matches('/');
                if s.contains("://") {
                    s.to_string()
                } else {
                    format!("http://{s}")
                }
            }
            (None, Some(settings)) => format!("http://{}", settings.listen),
            (None, None) => "http://127.0.0.1:9090".to_string(),
        };
        let token = match (&args.token, &args.token_file, &settings) {
            (Some(token), _, _) => Some(token.trim().to_string()),
            (None, Some(path), _) => Some(read_token(path, "--token-file")?),
            (None, None, Some(settings)) => match &settings.server.token {
                Some(SecretValue::Inline(secret)) => Some(secret.0.clone()),
                Some(SecretValue::File(path)) => Some(read_token(path, "server.tokenFile")?),
                None => None,
            },
            (None, None, None) => None,
        };
        Ok(Daemon { base_url, token })
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }
}

fn read_token(path: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the API token from {key} {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// The daemon's answer as text; an error for anything but success, saying what to do.
fn answer(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<String> {
    let mut response = response
        .with_context(|| format!("cannot reach the daemon at {url}; is gitopsd running?"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    if status == ureq::http::StatusCode::UNAUTHORIZED {
        bail!(
            "the daemon at {url} refused the request (HTTP 401: {}); give its token with \
             GITOPSD_TOKEN, --token-file, or --config with server.token or server.tokenFile",
            escape::control(text.trim())
        );
    }
    if !status.is_success() {
        bail!("{}", escape::control(text.trim()));
    }
    Ok(text)
}

pub fn status(args: &ServerArgs, output: Output) -> anyhow::Result<i32> {
    let daemon = Daemon::locate(args)?;
    let url = format!("{}/api/v1/status", daemon.base_url);
    let body = answer(&url, daemon.authorize(Daemon::agent().get(&url)).call())?;
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
            // Errors quote file names and remote output: keep them on their line.
            escape::control(s.last_error.as_deref().unwrap_or(""))
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
            escape::control(k.last_error.as_deref().unwrap_or(""))
        );
    }
    for r in &doc.receivers {
        println!(
            "receiver {}/{}	type={}	path={}	triggers={}",
            r.namespace,
            r.name,
            r.kind.as_str(),
            r.path,
            r.configurations.join(",")
        );
    }
    Ok(0)
}

/// How often `gitopsd events --watch` asks for new events.
const WATCH_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub fn events(args: &ServerArgs, watch: bool, output: Output) -> anyhow::Result<i32> {
    let daemon = Daemon::locate(args)?;
    let mut since = 0;
    loop {
        let url = format!("{}/api/v1/events?since={since}", daemon.base_url);
        let body = answer(&url, daemon.authorize(Daemon::agent().get(&url)).call())?;
        let doc: crate::api::EventsDocument =
            serde_json::from_str(&body).context("unexpected events document")?;
        for e in &doc.events {
            match output {
                Output::Json => println!("{}", serde_json::to_string(e)?),
                Output::Text => {
                    let o = &e.involved_object;
                    println!(
                        "{}\t{}\t{}/{}/{}\t{}\t{}",
                        e.timestamp,
                        e.severity.as_str(),
                        o.kind,
                        o.namespace,
                        o.name,
                        e.reason,
                        // Messages quote remote output and span lines: keep each on one.
                        escape::control(&e.message)
                    );
                }
            }
        }
        if !watch {
            return Ok(0);
        }
        since = doc.next;
        std::thread::sleep(WATCH_POLL);
    }
}

/// `name` is NAME or NAMESPACE/NAME; the daemon refuses a bare name that several namespaces
/// use, and says so.
pub fn reconcile(args: &ServerArgs, name: &str, namespace: Option<&str>) -> anyhow::Result<i32> {
    let path = match (name.split_once('/'), namespace) {
        (None, None) => name.to_string(),
        (None, Some(ns)) => format!("{ns}/{name}"),
        (Some((ns, n)), None) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
            format!("{ns}/{n}")
        }
        (Some(_), None) => bail!(
            "invalid configuration {}: expected NAME or NAMESPACE/NAME",
            escape::control(name)
        ),
        (Some(_), Some(_)) => bail!(
            "{} already names a namespace; drop --namespace or give NAME alone",
            escape::control(name)
        ),
    };
    let daemon = Daemon::locate(args)?;
    let url = format!("{}/api/v1/reconcile/{path}", daemon.base_url);
    let text = answer(
        &url,
        daemon.authorize(Daemon::agent().post(&url)).send_empty(),
    )?;
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
