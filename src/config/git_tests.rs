//! The git kind's keys, checked through the whole loader: what `source::git::config` turns
//! them into, and where each problem is reported.

use crate::source::git::config::SecretSource;
use std::path::Path;

fn load(source: &str) -> Result<crate::config::Settings, Vec<String>> {
    let text = format!(
        "configurations:\n  - name: c\n    source:\n{}",
        source
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    );
    crate::config::load_str(&text, Path::new("gitopsd.yaml"), Path::new("/etc/gitopsd"))
        .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
}

fn b64(text: &str) -> String {
    openssl::base64::encode_block(text.as_bytes())
}

const KEY: &str =
    "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\nBBBB\n-----END OPENSSH PRIVATE KEY-----\n";

#[test]
fn flat_fields_become_settings() {
    let settings = load(&format!(
        "kind: git\nurl: ssh://git@example.com/org/repo\nsshPrivateKey: {}\nsshPassphrase: pw\nknownHostsFile: ./known_hosts\n",
        b64(KEY)
    ))
    .unwrap();
    let auth = &settings.configurations[0].source.git().unwrap().auth;
    match &auth.ssh_private_key {
        Some(SecretSource::Inline(bytes)) => assert_eq!(bytes.expose(), KEY.as_bytes()),
        other => panic!("{other:?}"),
    }
    match &auth.known_hosts {
        Some(SecretSource::File(path)) => {
            assert_eq!(path, Path::new("/etc/gitopsd/known_hosts"))
        }
        other => panic!("{other:?}"),
    }
    let settings = load(
        "kind: git\nurl: https://example.com/org/repo\nhttpsUser: u\nhttpsKeyFile: /run/token\nhttpsCACertFile: ca.pem\n",
    )
    .unwrap();
    let auth = &settings.configurations[0].source.git().unwrap().auth;
    assert_eq!(auth.https_user.as_deref(), Some("u"));
    assert!(matches!(&auth.https_key, Some(SecretSource::File(p)) if p == Path::new("/run/token")));
    let settings = load(
        "kind: git\nurl: https://example.com/org/repo\nlocalAuthRef: { directory: /run/secrets/git }\n",
    )
    .unwrap();
    assert_eq!(
        settings.configurations[0]
            .source
            .git()
            .unwrap()
            .auth
            .local_auth_ref
            .as_deref(),
        Some(Path::new("/run/secrets/git"))
    );
}

#[test]
fn problems_are_reported_at_their_value() {
    let errors = load(
        "kind: git\nurl: https://example.com/org/repo\nhttpsUser: u\nhttpsKey: a\nhttpsKeyFile: /k\n",
    )
    .unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:8:21: `httpsKey` and `httpsKeyFile` are both set; give one of them"]
    );
    let errors = load("kind: git\nurl: https://example.com/org/repo\nhttpsUser: u\n").unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:6:18: `httpsUser` needs `httpsKey` or `httpsKeyFile` (the password or token)"]
    );
    let errors = load("kind: git\nurl: ssh://git@h/r\nsshPrivateKey: '***'\n").unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("gitopsd.yaml:6:22: invalid base64 for an SSH private key"),
        "{errors:?}"
    );
    let errors = load(&format!(
        "kind: git\nurl: ssh://git@h/r\nsshPrivateKey: {}\n",
        b64("hello")
    ))
    .unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:6:22: the base64 value does not decode to an SSH private key"]
    );
    let errors = load("kind: git\nurl: https://h/r\nsshPrivateKeyFile: /k\n").unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:6:26: `sshPrivateKeyFile` applies only to ssh URLs (ssh://... or user@host:path)"]
    );
    let errors = load("kind: git\nurl: ssh://git@h/r\nbearerTokenFile: /t\n").unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:6:24: `bearerTokenFile` applies only to http(s) URLs"]
    );
    let errors =
        load("kind: git\nurl: https://h/r\nbearerToken: t\nlocalAuthRef: { directory: /d }\n")
            .unwrap_err();
    assert_eq!(
        errors,
        vec![
            "gitopsd.yaml:6:20: `bearerToken` cannot be combined with `localAuthRef` (line 7); \
              put every credential in one place"
        ]
    );
    let errors = load("kind: git\nurl: https://h/r\ntlsClientCertFile: /c\n").unwrap_err();
    assert_eq!(
        errors,
        vec!["gitopsd.yaml:6:26: `tlsClientCertFile` needs `tlsClientKeyFile`"]
    );
    let errors = load("kind: git\nurl: https://h/r\nhttpsUser: u\nhttpsKey: k\nbearerToken: t\n")
        .unwrap_err();
    assert_eq!(errors, vec!["gitopsd.yaml:8:20: a bearer token cannot be combined with `httpsUser`; use one of them"]);
    let errors = load("kind: git\nurl: ssh://git@h/r\nsshPassphrase: p\n").unwrap_err();
    assert_eq!(
        errors,
        vec![
            "gitopsd.yaml:6:22: `sshPassphrase` needs `sshPrivateKey` or `sshPrivateKeyFile` (a \
              generated key has no passphrase)"
        ]
    );
    // No secret value is ever quoted back.
    let errors = load("kind: git\nurl: https://h/r\nhttpsKey: hunter2\n").unwrap_err();
    assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
}
