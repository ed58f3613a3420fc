//! The `receivers`, `providers` and `alerts` sections: values, defaults, and every problem at
//! its position.

use super::*;
use crate::config::{load_str, Diagnostics, Settings};
use crate::vocab::SecretValue;
use std::path::Path;
use std::time::Duration;

fn load(text: &str) -> Result<Settings, Diagnostics> {
    load_str(text, Path::new("gitopsd.yaml"), Path::new("/etc/gitopsd"))
}

fn problems(text: &str) -> Vec<(usize, usize, String)> {
    load(text)
        .expect_err("config should be rejected")
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

const CONFIGURATIONS: &str = "configurations:
  - name: web
    source: { kind: git, url: https://h/web }
  - name: api
    namespace: team
    source: { kind: git, url: https://h/api }
";

#[test]
fn full_sections_load_with_defaults() {
    let text = format!(
        "{CONFIGURATIONS}receivers:
  listen: 0.0.0.0:9292
  hooks:
    - name: github
      type: github
      secret: s3cr3t
      events: [push]
      configurations: [web, team/api]
    - name: gitlab
      namespace: team
      type: gitlab
      secretFile: keys/gitlab
      configurations: [api]
    - name: bb
      type: bitbucket
      localAuthRef: {{ directory: /run/secrets/bb }}
      configurations: [web]
providers:
  - name: slack
    type: slack
    addressFile: /run/secrets/slack-url
    channel: '#ops'
  - name: hook
    type: generic-hmac
    address: https://alerts.example.com/flux
    secret: key
    proxy: http://proxy:3128
    certFile: ca.pem
    timeout: 5s
alerts:
  - name: errors
    provider: slack
    eventSeverity: error
    eventSources: [{{ kind: '*', name: '*' }}]
  - name: web
    provider: hook
    eventSources: [{{ kind: GitRepository, name: web, namespace: default }}]
    inclusionList: ['^fetched']
    exclusionList: ['test']
"
    );
    let settings = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let events = &settings.events;
    let receivers = events.receivers.as_ref().unwrap();
    assert_eq!(receivers.listen, "0.0.0.0:9292".parse().unwrap());
    assert_eq!(receivers.read_timeout, DEFAULT_RECEIVER_READ_TIMEOUT);
    let [github, gitlab, bb] = &receivers.hooks[..] else {
        panic!("three hooks expected")
    };
    assert_eq!(github.kind, ReceiverType::Github);
    assert_eq!(github.namespace, "default");
    assert_eq!(github.events, vec!["push".to_string()]);
    assert_eq!(
        github.configurations,
        vec![
            ("default".to_string(), "web".to_string()),
            ("team".to_string(), "api".to_string())
        ]
    );
    assert!(
        matches!(&gitlab.secret, SecretSource::Value(SecretValue::File(p)) if p == Path::new("/etc/gitopsd/keys/gitlab"))
    );
    assert_eq!(
        gitlab.configurations,
        vec![("team".to_string(), "api".to_string())]
    );
    assert!(matches!(&bb.secret, SecretSource::Directory(p) if p == Path::new("/run/secrets/bb")));
    let [slack, hook] = &events.providers[..] else {
        panic!("two providers expected")
    };
    assert_eq!(slack.kind, ProviderType::Slack);
    assert_eq!(slack.channel.as_deref(), Some("#ops"));
    assert_eq!(slack.timeout, DEFAULT_PROVIDER_TIMEOUT);
    assert_eq!(hook.kind, ProviderType::GenericHmac);
    assert_eq!(
        hook.cert_file.as_deref(),
        Some(Path::new("/etc/gitopsd/ca.pem"))
    );
    assert_eq!(hook.timeout, Duration::from_secs(5));
    let [errors, web] = &events.alerts[..] else {
        panic!("two alerts expected")
    };
    assert_eq!((errors.provider, errors.severity), (0, Severity::Error));
    assert_eq!((web.provider, web.severity), (1, Severity::Info));
    assert_eq!(web.sources[0].namespace, "default");
    assert_eq!(errors.sources[0].namespace, "*");
    assert!(web.inclusion[0].is_match("fetched revision"));
}

#[test]
fn the_receivers_cannot_share_the_apis_address() {
    let text = format!(
        "server: {{ listen: 127.0.0.1:9090 }}\n{CONFIGURATIONS}receivers: {{ listen: 127.0.0.1:9090 }}\n"
    );
    assert_eq!(
        problems(&text),
        vec![(
            8,
            22,
            "receivers.listen 127.0.0.1:9090 is also server.listen; the receivers need an \
             address of their own"
                .to_string()
        )]
    );
}

#[test]
fn no_sections_no_receivers() {
    let settings = load(CONFIGURATIONS).unwrap();
    assert!(settings.events.receivers.is_none());
    assert!(settings.events.providers.is_empty() && settings.events.alerts.is_empty());
}

#[test]
fn every_problem_is_reported_at_its_position() {
    let text = format!(
        "{CONFIGURATIONS}receivers:
  listen: everywhere
  readTimeout: 0s
  hooks:
    - name: a
      type: gogs
      secret: x
      configurations: [nope]
    - name: b
      type: github
      configurations: [web]
    - name: c
      type: generic
      secret: x
      secretFile: y
      configurations: [web]
    - name: a
      type: generic
      localAuthRef: {{ secret: s }}
      configurations: [web]
      evnts: [push]
providers:
  - name: p
    type: pager
    address: ftp://x
  - name: q
    type: generic-hmac
    address: https://h/x
alerts:
  - name: al
    provider: nobody
    eventSeverity: warning
    eventSources: [{{ kind: GitRepo, name: '*' }}]
    inclusionList: ['(']
  - {{ name: none, provider: q, eventSources: [] }}
"
    );
    let found = problems(&text);
    let summary: Vec<(usize, usize, &str)> =
        found.iter().map(|(l, c, m)| (*l, *c, m.as_str())).collect();
    let expected: Vec<(usize, usize, &str)> = vec![
        (
            8,
            11,
            "invalid listen address \"everywhere\" for receivers.listen",
        ),
        (9, 16, "invalid duration \"0s\" for receivers.readTimeout"),
        (12, 13, "invalid hook type \"gogs\""),
        (14, 24, "hook configurations: no configuration named nope"),
        (15, 7, "a hook needs its secret"),
        (21, 19, "give a hook's secret once"),
        (23, 13, "duplicate hook `a` in namespace `default`"),
        (
            25,
            31,
            "`localAuthRef.secret` names a Kubernetes Secret, which needs a cluster",
        ),
        (
            27,
            7,
            "unknown field `evnts` in `hook` (did you mean `events`?)",
        ),
        (30, 11, "invalid provider type \"pager\""),
        (
            31,
            14,
            "invalid provider address: expected an http:// or https:// URL",
        ),
        (32, 5, "a generic-hmac provider needs the key it signs with"),
        (37, 15, "alert provider: no provider named nobody"),
        (38, 20, "invalid eventSeverity \"warning\""),
        (39, 28, "invalid eventSources kind \"GitRepo\""),
        (40, 21, "invalid regular expression in inclusionList"),
        (41, 46, "an alert needs at least one entry in eventSources"),
    ];
    assert_eq!(summary.len(), expected.len(), "{summary:#?}");
    for (got, want) in summary.iter().zip(&expected) {
        assert_eq!((got.0, got.1), (want.0, want.1), "{}", got.2);
        assert!(got.2.starts_with(want.2), "{} / {}", got.2, want.2);
    }
    // The address may embed a token: it is never quoted.
    assert!(!found.iter().any(|(_, _, m)| m.contains("ftp://x")));
}
