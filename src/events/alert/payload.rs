//! The request body each provider type gets, in the shapes Flux's notification-controller
//! sends (so that whatever already reads Flux's alerts reads gitopsd's):
//!
//! - `generic`, `generic-hmac`: the event itself, as Flux's `eventv1.Event` JSON;
//! - `slack` (and `discord`, through Discord's Slack-compatible endpoint): one attachment,
//!   green or red by severity, `author_name` `<kind>/<name>.<namespace>`, the message as
//!   markdown text and the metadata as fields;
//! - `msteams`: an Adaptive Card in a `message` envelope, which Teams' workflow webhooks
//!   (the successor of the retired Office 365 connectors) accept: a title block, the
//!   message, and the metadata as a FactSet.

use super::Event;
use crate::config::{ProviderType, Severity};
use serde_json::{json, Value};

/// The JSON body for `kind`; `channel` and `username` are Slack's optional overrides.
pub fn body(
    kind: ProviderType,
    event: &Event,
    channel: Option<&str>,
    username: Option<&str>,
) -> Value {
    match kind {
        ProviderType::Generic | ProviderType::GenericHmac => {
            serde_json::to_value(event).unwrap_or(Value::Null)
        }
        ProviderType::Slack | ProviderType::Discord => slack(event, channel, username),
        ProviderType::Msteams => msteams(event),
    }
}

/// `gitrepository/web.default`: how Flux titles an event.
pub fn title(event: &Event) -> String {
    let o = &event.involved_object;
    format!("{}/{}.{}", o.kind.to_ascii_lowercase(), o.name, o.namespace)
}

fn slack(event: &Event, channel: Option<&str>, username: Option<&str>) -> Value {
    let fields: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({ "title": k, "value": v, "short": false }))
        .collect();
    let color = match event.severity {
        Severity::Error => "danger",
        Severity::Info => "good",
    };
    let mut body = json!({
        "attachments": [{
            "color": color,
            "author_name": title(event),
            "text": event.message,
            "mrkdwn_in": ["text"],
            "fields": fields,
        }],
    });
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "username".into(),
            Value::from(username.unwrap_or("gitopsd")),
        );
        if let Some(channel) = channel {
            map.insert("channel".into(), Value::from(channel));
        }
    }
    body
}

fn msteams(event: &Event) -> Value {
    let facts: Vec<Value> = event
        .metadata
        .iter()
        .map(|(k, v)| json!({ "title": k, "value": v }))
        .collect();
    let mut heading = json!({
        "type": "TextBlock",
        "text": title(event),
        "size": "Medium",
        "weight": "Bolder",
        "wrap": true,
    });
    if event.severity == Severity::Error {
        if let Some(map) = heading.as_object_mut() {
            map.insert("color".into(), Value::from("Attention"));
        }
    }
    let mut card_body = vec![
        heading,
        json!({ "type": "TextBlock", "text": event.message, "wrap": true }),
    ];
    if !facts.is_empty() {
        card_body.push(json!({ "type": "FactSet", "facts": facts }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": card_body,
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::alert::ObjectRef;
    use std::collections::BTreeMap;

    fn event(severity: Severity) -> Event {
        Event {
            involved_object: ObjectRef::git_repository("default", "web"),
            severity,
            timestamp: "2026-01-01T00:00:00Z".into(),
            message: "stored artifact".into(),
            reason: "NewArtifact".into(),
            metadata: BTreeMap::from([("revision".into(), "main@sha1:abc".into())]),
            reporting_controller: "gitopsd".into(),
            reporting_instance: "node".into(),
        }
    }

    #[test]
    fn generic_is_fluxs_event_json() {
        let body = body(ProviderType::Generic, &event(Severity::Info), None, None);
        assert_eq!(body["involvedObject"]["kind"], "GitRepository");
        assert_eq!(
            body["involvedObject"]["apiVersion"],
            "source.toolkit.fluxcd.io/v1"
        );
        assert_eq!(body["severity"], "info");
        assert_eq!(body["reason"], "NewArtifact");
        assert_eq!(body["metadata"]["revision"], "main@sha1:abc");
        assert_eq!(body["reportingController"], "gitopsd");
    }

    #[test]
    fn slack_and_teams_shapes() {
        let slack = body(
            ProviderType::Slack,
            &event(Severity::Error),
            Some("#ops"),
            None,
        );
        assert_eq!(slack["channel"], "#ops");
        assert_eq!(slack["attachments"][0]["color"], "danger");
        assert_eq!(
            slack["attachments"][0]["author_name"],
            "gitrepository/web.default"
        );
        assert_eq!(slack["attachments"][0]["fields"][0]["title"], "revision");
        let teams = body(ProviderType::Msteams, &event(Severity::Info), None, None);
        let card = &teams["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][1]["text"], "stored artifact");
        assert_eq!(card["body"][2]["facts"][0]["value"], "main@sha1:abc");
    }
}
