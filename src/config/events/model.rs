//! The validated receivers, providers and alerts that the rest of gitopsd consumes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::vocab::{SecretRef, SecretValue};

/// How long a receiver's client may take to send its headers, and again its body.
pub const DEFAULT_RECEIVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections a receiver listener serves at once unless `receivers.maxConnections` says.
pub const DEFAULT_RECEIVER_CONNECTIONS: usize = 256;
/// How long one delivery to a provider may take.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// The kinds of receiver, with Flux's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    Generic,
    GenericHmac,
    Github,
    Gitlab,
    Bitbucket,
}

impl ReceiverType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "generic" => ReceiverType::Generic,
            "generic-hmac" => ReceiverType::GenericHmac,
            "github" => ReceiverType::Github,
            "gitlab" => ReceiverType::Gitlab,
            "bitbucket" => ReceiverType::Bitbucket,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverType::Generic => "generic",
            ReceiverType::GenericHmac => "generic-hmac",
            ReceiverType::Github => "github",
            ReceiverType::Gitlab => "gitlab",
            ReceiverType::Bitbucket => "bitbucket",
        }
    }
}

/// The kinds of alert provider, with Flux's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    Generic,
    GenericHmac,
    Slack,
    Msteams,
    Discord,
}

impl ProviderType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "generic" => ProviderType::Generic,
            "generic-hmac" => ProviderType::GenericHmac,
            "slack" => ProviderType::Slack,
            "msteams" => ProviderType::Msteams,
            "discord" => ProviderType::Discord,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Generic => "generic",
            ProviderType::GenericHmac => "generic-hmac",
            ProviderType::Slack => "slack",
            ProviderType::Msteams => "msteams",
            ProviderType::Discord => "discord",
        }
    }
}

/// `info` (every event) or `error` (errors only), as Flux's `eventSeverity`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Error => "error",
        }
    }
}

/// Where a receiver's or provider's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `secret` inline, or `secretFile`.
    Value(SecretValue),
    /// `localAuthRef.directory`: the file `token` in it (a mounted Secret, Flux's key name).
    Directory(PathBuf),
    /// `localAuthRef.secret`: the key `token` of that Secret.
    Kubernetes(SecretRef),
}

/// Everything the three sections say.
#[derive(Debug, Clone, Default)]
pub struct EventSettings {
    /// `None`: no `receivers` section, no listener.
    pub receivers: Option<ReceiverSettings>,
    pub providers: Vec<ProviderSettings>,
    pub alerts: Vec<AlertSettings>,
}

#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub listen: SocketAddr,
    pub read_timeout: Duration,
    pub max_connections: usize,
    pub hooks: Vec<HookSettings>,
}

/// One receiver (Flux's Receiver).
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub name: String,
    pub namespace: String,
    pub kind: ReceiverType,
    pub secret: SecretSource,
    /// Event names it acts on (case-insensitive); empty: every event.
    pub events: Vec<String>,
    /// `(namespace, name)` of each configuration it triggers; each exists (checked at load).
    pub configurations: Vec<(String, String)>,
}

/// One alert provider (Flux's Provider).
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderType,
    /// The webhook URL: a secret, since chat services embed their token in it.
    pub address: SecretValue,
    /// generic-hmac's key; a bearer token for the others, when given.
    pub secret: Option<SecretValue>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub proxy: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub cert_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// One alert (Flux's Alert).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub name: String,
    /// Index into [`EventSettings::providers`].
    pub provider: usize,
    pub severity: Severity,
    pub sources: Vec<EventSourceSelector>,
    pub inclusion: Vec<regex::Regex>,
    pub exclusion: Vec<regex::Regex>,
    pub suspend: bool,
}

/// An `eventSources` entry; each field a pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceSelector {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}
