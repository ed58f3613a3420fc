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

pub fn status(args: &ServerArgs, output: Output, watch: bool) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let daemon = Daemon::locate(args)?;
    let url = format!("{}/api/v1/status", daemon.base_url);
    let terminal = std::io::stdout().is_terminal();
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut last = None;
    loop {
        let body = answer(&url, daemon.authorize(Daemon::agent().get(&url)).call())?;
        let doc: StatusDocument =
            serde_json::from_str(&body).context("unexpected status document")?;
        let shown = match output {
            // The daemon's document as it sent it: fields this client does not know are kept.
            Output::Json => format!("{}\n", body.trim_end()),
            Output::Yaml => serde_saphyr::to_string(&doc)?,
            Output::Text => {
                let mut text = super::status::table(&doc, std::time::SystemTime::now(), colour);
                for r in &doc.receivers {
                    text.push_str(&format!(
                        "receiver {}/{}\ttype={}\tpath={}\ttriggers={}\n",
                        r.namespace,
                        r.name,
                        r.kind.as_str(),
                        r.path,
                        r.configurations.join(",")
                    ));
                }
                text
            }
        };
        if !watch {
            print!("{shown}");
            return Ok(0);
        }
        // On a terminal the screen is redrawn (the ages move); into a pipe, a document is
        // printed again only when it changed, so a log of `--watch` is a log of changes.
        if terminal {
            print!("\x1b[H\x1b[2J{shown}");
        } else if last.as_ref() != Some(&shown) {
            println!("{shown}");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        last = Some(shown);
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// How often `status --watch` asks again.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

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
                Output::Yaml => print!("---\n{}", serde_saphyr::to_string(e)?),
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

/// `gitopsd suspend` (`suspended`) and `gitopsd resume`: NAME is CONFIGURATION or
/// CONFIGURATION/KUSTOMIZATION (namespaces go in `--namespace`, as in kubectl).
pub fn suspend(args: &super::SuspendArgs, suspended: bool) -> anyhow::Result<i32> {
    let (configuration, kustomization) = match args.name.split_once('/') {
        None => (args.name.as_str(), None),
        Some((c, k)) if !c.is_empty() && !k.is_empty() && !k.contains('/') => (c, Some(k)),
        Some(_) => {
            eprintln!(
                "error: invalid name {}: expected CONFIGURATION or CONFIGURATION/KUSTOMIZATION",
                escape::control(&args.name)
            );
            return Ok(super::check::INVALID_CONFIG);
        }
    };
    let daemon = Daemon::locate(&args.server)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(ns) = &args.namespace {
        query.append_pair("namespace", ns);
    }
    if let Some(k) = kustomization {
        query.append_pair("kustomization", k);
    }
    let query = query.finish();
    let segment =
        percent_encoding::utf8_percent_encode(configuration, percent_encoding::NON_ALPHANUMERIC);
    let verb = if suspended { "suspend" } else { "resume" };
    let mut url = format!("{}/api/v1/{verb}/{segment}", daemon.base_url);
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let text = answer(
        &url,
        daemon.authorize(Daemon::agent().post(&url)).send_empty(),
    )?;
    println!("{}", text.trim());
    Ok(0)
}
