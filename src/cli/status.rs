//! `gitopsd status`: the daemon's status document as a table a person reads (`flux get all`'s
//! shape), or as JSON / YAML for scripts; `--watch` redraws it.
//!
//! Decisions:
//! - One row per object, sources first, each configuration's kustomizations under it
//!   (`app/infra`), so a failing kustomization sits next to its source.
//! - REVISION shortens the commit to 12 hex digits, as `git log --oneline` users expect; the
//!   JSON and YAML keep it whole.
//! - AGE is how long the object has been in its current Ready state (the condition's last
//!   transition), which answers "since when is it failing?"; a daemon's objects have no
//!   creation time worth showing.
//! - Colours only when stdout is a terminal and `NO_COLOR` is unset: a pipe or a log file
//!   gets plain text. Every cell is escaped, so an error quoting a file name with a newline
//!   cannot break the table.

use crate::api::StatusDocument;
use crate::escape;
use crate::state::Condition;
use std::time::SystemTime;

/// One table row.
struct Row {
    namespace: String,
    name: String,
    kind: &'static str,
    revision: String,
    suspended: bool,
    /// "True", "False" or "Unknown".
    ready: String,
    age: String,
    message: String,
}

const HEADER: [&str; 8] = [
    "NAMESPACE",
    "NAME",
    "KIND",
    "REVISION",
    "SUSPENDED",
    "READY",
    "AGE",
    "MESSAGE",
];

/// The table for `doc` at `now`; `colour` adds ANSI colours to READY.
pub fn table(doc: &StatusDocument, now: SystemTime, colour: bool) -> String {
    let rows = rows(doc, now);
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.name.clone(),
                r.kind.to_string(),
                r.revision.clone(),
                if r.suspended { "True" } else { "False" }.to_string(),
                r.ready.clone(),
                r.age.clone(),
                r.message.clone(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String; 8], colour_ready: bool| {
        let mut parts = Vec::with_capacity(8);
        for (i, cell) in row.iter().enumerate() {
            let last = i == row.len() - 1;
            let padded = if last {
                cell.clone()
            } else {
                format!("{cell:<width$}", width = widths[i])
            };
            // Colour codes go around the padded cell so that they do not count as width.
            let painted = match (colour_ready && i == 5, cell.as_str()) {
                (true, "True") => format!("\x1b[32m{padded}\x1b[0m"),
                (true, "False") => format!("\x1b[31m{padded}\x1b[0m"),
                _ => padded,
            };
            parts.push(painted);
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADER.map(str::to_string), false);
    for row in &cells {
        line(&mut out, row, colour);
    }
    out
}

fn rows(doc: &StatusDocument, now: SystemTime) -> Vec<Row> {
    let mut rows = Vec::new();
    for s in &doc.sources {
        let (ready, since) = ready_since(&s.conditions);
        rows.push(Row {
            namespace: cell(&s.namespace),
            name: cell(&s.name),
            kind: match s.kind.as_str() {
                "git" => "GitRepository",
                "bucket" => "Bucket",
                "azblob" => "AzureBlob",
                _ => "Source",
            },
            revision: short_revision(s.revision.as_ref().map(|r| r.as_str())),
            suspended: s.suspended,
            ready,
            age: age(since, now),
            message: cell(&message(s.last_error.as_deref(), &s.conditions)),
        });
        for k in doc
            .kustomizations
            .iter()
            .filter(|k| k.namespace == s.namespace && k.configuration == s.name)
        {
            let (ready, since) = ready_since(&k.conditions);
            rows.push(Row {
                namespace: cell(&k.namespace),
                name: cell(&format!("{}/{}", k.configuration, k.name)),
                kind: "Kustomization",
                revision: short_revision(k.last_applied_revision.as_ref().map(|r| r.as_str())),
                suspended: k.suspended,
                ready,
                age: age(since, now),
                message: cell(&message(k.last_error.as_deref(), &k.conditions)),
            });
        }
    }
    rows
}

fn cell(text: &str) -> String {
    escape::control(text).into_owned()
}

/// The Ready condition's status and when it last changed.
fn ready_since(conditions: &[Condition]) -> (String, Option<&str>) {
    match conditions.iter().find(|c| c.kind == "Ready") {
        Some(c) => (c.status.clone(), Some(c.last_transition_time.as_str())),
        None => ("Unknown".to_string(), None),
    }
}

/// The last error, else the Ready condition's message.
fn message(error: Option<&str>, conditions: &[Condition]) -> String {
    match error {
        Some(e) => e.to_string(),
        None => conditions
            .iter()
            .find(|c| c.kind == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default(),
    }
}

/// `main@sha1:0123456789ab` for `main@sha1:<40 hex>`; anything else as it is.
fn short_revision(revision: Option<&str>) -> String {
    let Some(revision) = revision else {
        return "-".to_string();
    };
    match revision.rsplit_once(':') {
        Some((prefix, hex)) if hex.len() > 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            cell(&format!("{prefix}:{}", &hex[..12]))
        }
        _ => cell(revision),
    }
}

/// `45s`, `12m`, `3h`, `2d` since the RFC 3339 `since`, as kubectl prints ages.
fn age(since: Option<&str>, now: SystemTime) -> String {
    let Some(then) = since.and_then(|s| humantime::parse_rfc3339_weak(s).ok()) else {
        return "-".to_string();
    };
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KustomizationStatus, SourceStatus};
    use std::time::Duration;

    fn condition(status: &str, message: &str, at: &str) -> Vec<Condition> {
        vec![Condition {
            kind: "Ready".into(),
            status: status.into(),
            reason: String::new(),
            message: message.into(),
            last_transition_time: at.into(),
        }]
    }

    #[test]
    fn the_table_lists_sources_with_their_kustomizations_aligned() {
        let doc = StatusDocument {
            sources: vec![SourceStatus {
                name: "fleet".into(),
                namespace: "default".into(),
                kind: "git".into(),
                revision: Some(crate::vocab::Revision(
                    "main@sha1:0123456789abcdef0123456789abcdef01234567".into(),
                )),
                conditions: condition("True", "stored artifact", "2026-01-01T00:00:00Z"),
                ..SourceStatus::default()
            }],
            kustomizations: vec![KustomizationStatus {
                name: "apps".into(),
                configuration: "fleet".into(),
                namespace: "default".into(),
                suspended: true,
                conditions: condition("False", "ignored", "2026-01-01T00:00:00Z"),
                last_error: Some("kustomize failed:\nline two".into()),
                ..KustomizationStatus::default()
            }],
            reload: None,
            receivers: vec![],
        };
        let now = humantime::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let table = table(&doc, now, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("NAMESPACE  NAME        KIND"),
            "{table}"
        );
        assert!(lines[1].contains("main@sha1:0123456789ab "), "{table}");
        assert!(lines[1].contains("  5m   stored artifact"), "{table}");
        assert!(lines[2].contains("fleet/apps  Kustomization"), "{table}");
        assert!(lines[2].contains("kustomize failed:\\nline two"), "{table}");
        // Columns line up: KIND starts at the same offset on every line.
        let column = |line: &str, word: &str| line.find(word).unwrap();
        assert_eq!(column(lines[0], "KIND"), column(lines[1], "GitRepository"));
        assert_eq!(column(lines[0], "KIND"), column(lines[2], "Kustomization"));
        assert!(!table.contains('\x1b'));
        let coloured = super::table(&doc, now + Duration::from_secs(7200), true);
        assert!(coloured.contains("\x1b[32mTrue"), "{coloured}");
        assert!(coloured.contains("  2h  "), "{coloured}");
    }
}
