//! The three sections as written: which keys exist and what shape each has. Values stay
//! text with their positions; `validate` decides what they mean.

use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{Node, NodeKind, Pos, Problems, Spanned};

pub const RECEIVERS_FIELDS: &[&str] = &["listen", "readTimeout", "maxConnections", "hooks"];
pub const HOOK_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "type",
    "secret",
    "secretFile",
    "localAuthRef",
    "events",
    "configurations",
];
pub const LOCAL_AUTH_FIELDS: &[&str] = &["directory", "secret"];
pub const PROVIDER_FIELDS: &[&str] = &[
    "name",
    "type",
    "address",
    "addressFile",
    "secret",
    "secretFile",
    "channel",
    "username",
    "proxy",
    "certFile",
    "timeout",
];
pub const ALERT_FIELDS: &[&str] = &[
    "name",
    "provider",
    "eventSeverity",
    "eventSources",
    "inclusionList",
    "exclusionList",
    "suspend",
];
pub const EVENT_SOURCE_FIELDS: &[&str] = &["kind", "name", "namespace"];

/// The three sections as written.
#[derive(Debug, Clone, Default)]
pub struct RawEvents {
    pub receivers: Option<RawReceivers>,
    pub providers: Vec<RawProvider>,
    pub alerts: Vec<RawAlert>,
}

#[derive(Debug, Clone)]
pub struct RawReceivers {
    pub listen: Option<Text>,
    pub read_timeout: Option<Text>,
    pub max_connections: Option<Text>,
    pub hooks: Vec<RawHook>,
}

#[derive(Debug, Clone)]
pub struct RawHook {
    pub pos: Pos,
    pub name: Option<Text>,
    pub namespace: Option<Text>,
    pub kind: Option<Text>,
    pub secret: Option<Text>,
    pub secret_file: Option<Text>,
    pub local_auth: Option<(Pos, Option<Text>, Option<Text>)>,
    pub events: Vec<Text>,
    pub configurations: Vec<Text>,
}

#[derive(Debug, Clone)]
pub struct RawProvider {
    pub pos: Pos,
    pub name: Option<Text>,
    pub kind: Option<Text>,
    pub address: Option<Text>,
    pub address_file: Option<Text>,
    pub secret: Option<Text>,
    pub secret_file: Option<Text>,
    pub channel: Option<Text>,
    pub username: Option<Text>,
    pub proxy: Option<Text>,
    pub cert_file: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawAlert {
    pub name: Option<Text>,
    pub provider: Option<Text>,
    pub severity: Option<Text>,
    pub sources: Vec<(Option<Text>, Option<Text>, Option<Text>)>,
    pub inclusion: Vec<Text>,
    pub exclusion: Vec<Text>,
    pub suspend: Option<Text>,
}

/// Reads the three top-level keys from the file's root mapping.
pub fn decode(root: &Fields<'_>, problems: &mut Problems) -> RawEvents {
    let receivers = root
        .mapping("receivers", RECEIVERS_FIELDS, problems)
        .map(|f| {
            f.require("listen", problems);
            RawReceivers {
                listen: f.text("listen", problems),
                read_timeout: f.text("readTimeout", problems),
                max_connections: f.text("maxConnections", problems),
                hooks: f
                    .list("hooks", problems)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|node| hook(node, problems))
                    .collect(),
            }
        });
    let providers = root
        .list("providers", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|node| provider(node, problems))
        .collect();
    let alerts = root
        .list("alerts", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|node| alert(node, problems))
        .collect();
    RawEvents {
        receivers,
        providers,
        alerts,
    }
}

fn hook(node: &Node, problems: &mut Problems) -> Option<RawHook> {
    let f = Fields::open(node, "hook", HOOK_FIELDS, problems)?;
    f.require("name", problems);
    f.require("type", problems);
    f.require("configurations", problems);
    let local_auth = f
        .mapping("localAuthRef", LOCAL_AUTH_FIELDS, problems)
        .map(|l| {
            (
                l.pos,
                l.text("directory", problems),
                l.text("secret", problems),
            )
        });
    Some(RawHook {
        pos: f.pos,
        name: f.text("name", problems),
        namespace: f.text("namespace", problems),
        kind: f.text("type", problems),
        secret: f.text("secret", problems),
        secret_file: f.text("secretFile", problems),
        local_auth,
        events: texts(&f, "events", "an event name", problems),
        configurations: texts(&f, "configurations", "a configuration name", problems),
    })
}

fn provider(node: &Node, problems: &mut Problems) -> Option<RawProvider> {
    let f = Fields::open(node, "provider", PROVIDER_FIELDS, problems)?;
    f.require("name", problems);
    f.require("type", problems);
    Some(RawProvider {
        pos: f.pos,
        name: f.text("name", problems),
        kind: f.text("type", problems),
        address: f.text("address", problems),
        address_file: f.text("addressFile", problems),
        secret: f.text("secret", problems),
        secret_file: f.text("secretFile", problems),
        channel: f.text("channel", problems),
        username: f.text("username", problems),
        proxy: f.text("proxy", problems),
        cert_file: f.text("certFile", problems),
        timeout: f.text("timeout", problems),
    })
}

fn alert(node: &Node, problems: &mut Problems) -> Option<RawAlert> {
    let f = Fields::open(node, "alert", ALERT_FIELDS, problems)?;
    f.require("name", problems);
    f.require("provider", problems);
    f.require("eventSources", problems);
    let listed = f.list("eventSources", problems);
    if let (Some([]), Some(entry)) = (listed, f.get("eventSources")) {
        problems.push(
            entry.value.pos,
            "an alert needs at least one entry in eventSources (`{ kind: \"*\", name: \"*\" }` \
             takes every event)",
        );
    }
    let sources = listed
        .unwrap_or_default()
        .iter()
        .filter_map(|node| {
            let s = Fields::open(node, "eventSources", EVENT_SOURCE_FIELDS, problems)?;
            s.require("kind", problems);
            s.require("name", problems);
            Some((
                s.text("kind", problems),
                s.text("name", problems),
                s.text("namespace", problems),
            ))
        })
        .collect();
    Some(RawAlert {
        name: f.text("name", problems),
        provider: f.text("provider", problems),
        severity: f.text("eventSeverity", problems),
        sources,
        inclusion: texts(&f, "inclusionList", "a regular expression", problems),
        exclusion: texts(&f, "exclusionList", "a regular expression", problems),
        suspend: f.text("suspend", problems),
    })
}

/// A list of scalars.
fn texts(f: &Fields<'_>, key: &str, what: &str, problems: &mut Problems) -> Vec<Text> {
    f.list(key, problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match &item.kind {
            NodeKind::Scalar(text) => Some(Spanned::new(text.clone(), item.pos)),
            other => {
                problems.push(
                    item.pos,
                    format!("expected {what} in {key}, found {}", other.describe()),
                );
                None
            }
        })
        .collect()
}
