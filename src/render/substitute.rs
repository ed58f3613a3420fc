//! Post-build variable substitution, as Flux's `spec.postBuild` does it.
//!
//! Flux renders each object back to YAML and runs its fork of drone/envsubst over the text.
//! Only the braced form is replaced (`$var` stays as it is, which is how Flux users keep
//! shell variables in embedded scripts), and the forms Flux documents are supported:
//!
//! - `${var}`: the value, or the empty string when `var` is not set;
//! - `${var:=default}` / `${var:-default}`: the default when `var` is unset or empty;
//! - `${var=default}` / `${var-default}`: the default only when `var` is unset;
//! - `$${var}` writes `${var}` (and `$$` before anything else writes `$`).
//!
//! Variable names follow Flux's rule `[_a-zA-Z][_a-zA-Z0-9]*`, checked for the configured
//! names before any text is touched. Other envsubst operators (`${var^^}`, `${var/a/b}`, ...)
//! are refused with the expression named, rather than guessed at: a wrong guess would apply
//! a different object than Flux would.
//!
//! Written here rather than taken from a crate: the Rust envsubst crates substitute `$var` too,
//! or lack the `:=`/`=` distinction, and either would change what Flux users' manifests mean.

use std::collections::BTreeMap;

use super::{ObjectId, ObjectsError, Rendered};

/// A kustomization's `postBuild`, as the config states it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostBuild {
    /// `substitute`: name → value.
    pub substitute: BTreeMap<String, String>,
    /// `substituteFrom`, in order. Flux's precedence: a later source overrides an earlier
    /// one, and `substitute` overrides them all.
    pub substitute_from: Vec<ValuesFrom>,
}

/// One `substituteFrom` entry: a ConfigMap or Secret in the configuration's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesFrom {
    pub secret: bool,
    pub name: String,
    /// A missing object is no error.
    pub optional: bool,
}

/// Why post-build substitution failed; names the object, never a value.
#[derive(Debug, thiserror::Error)]
pub enum PostBuildError {
    #[error("post-build substitution in {object}: {source}")]
    Object {
        object: Box<ObjectId>,
        #[source]
        source: SubstituteError,
    },
    #[error("post-build substitution left invalid YAML: {0}")]
    Reparse(#[from] ObjectsError),
}

/// The annotation that keeps an object out of substitution, under gitopsd's and Flux's
/// prefixes.
const DISABLED: [&str; 2] = [
    "gitopsd.io/substitute",
    "kustomize.toolkit.fluxcd.io/substitute",
];

/// `rendered` with each object's YAML substituted from `vars`, as Flux does it: over the
/// text of each document (so `replicas: ${n}` becomes a number), skipping objects annotated
/// `substitute: disabled`. Nothing is done when there are no variables and no expressions.
pub fn post_build(
    rendered: &Rendered,
    vars: &BTreeMap<String, String>,
) -> Result<Rendered, PostBuildError> {
    if !rendered.yaml.contains("${") {
        return Ok(rendered.clone());
    }
    let documents = split_documents(&rendered.yaml);
    if documents.len() != rendered.objects.len() {
        // kustomize prints one document per object; anything else is not its output, so it
        // is substituted whole (no per-object opt-out to honour without the mapping).
        let yaml = substitute(&rendered.yaml, vars).map_err(|source| PostBuildError::Object {
            object: Box::new(ObjectId::new("", "", "", "(whole output)")),
            source,
        })?;
        return Ok(Rendered::from_yaml(yaml)?);
    }
    let mut yaml = String::with_capacity(rendered.yaml.len());
    for (document, object) in documents.iter().zip(&rendered.objects) {
        let annotations = &object.value["metadata"]["annotations"];
        let disabled = DISABLED.iter().any(|key| {
            annotations[*key]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
        });
        if !yaml.is_empty() {
            yaml.push_str("---\n");
        }
        if disabled {
            yaml.push_str(document);
        } else {
            yaml.push_str(&substitute(document, vars).map_err(|source| {
                PostBuildError::Object {
                    object: Box::new(object.id.clone()),
                    source,
                }
            })?);
        }
    }
    Ok(Rendered::from_yaml(yaml)?)
}

/// The documents of a YAML stream as kustomize prints it (`---` lines between them), each
/// ending with a newline; empty documents are dropped.
fn split_documents(yaml: &str) -> Vec<String> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in yaml.split_inclusive('\n') {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                documents.push(std::mem::take(&mut current));
            }
            current.clear();
        } else {
            current.push_str(line);
        }
    }
    if !current.trim().is_empty() {
        if !current.ends_with('\n') {
            current.push('\n');
        }
        documents.push(current);
    }
    documents
}

/// Why a text could not be substituted. Never carries a variable's value: values may come
/// from Secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    #[error("'{0}' is not a valid variable name (it must match [_a-zA-Z][_a-zA-Z0-9]*)")]
    InvalidName(String),
    #[error("unsupported substitution '${{{0}}}' (supported: ${{var}}, ${{var:=default}}, ${{var:-default}}, ${{var=default}}, ${{var-default}})")]
    Unsupported(String),
    #[error("unterminated substitution starting with '${{{0}'")]
    Unterminated(String),
}

/// Checks every configured variable name, as Flux does before it substitutes anything.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), SubstituteError> {
    for name in names {
        if !is_name(name) {
            return Err(SubstituteError::InvalidName(name.to_string()));
        }
    }
    Ok(())
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `text` with every `${...}` replaced from `vars`.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            // `$$` is a literal `$`, so `$${var}` is the literal text `${var}`.
            out.push('$');
            rest = escaped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let end = closing_brace(body)
            .ok_or_else(|| SubstituteError::Unterminated(body.chars().take(40).collect()))?;
        out.push_str(&expand(&body[..end], vars)?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes an expression, counting nested braces in a default.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            '\n' => return None,
            _ => {}
        }
    }
    None
}

fn expand(expression: &str, vars: &BTreeMap<String, String>) -> Result<String, SubstituteError> {
    let name_len = expression
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(expression.len(), |(i, _)| i);
    let (name, operator) = expression.split_at(name_len);
    if name.is_empty() {
        return Err(SubstituteError::Unsupported(expression.to_string()));
    }
    let value = vars.get(name);
    let (default, when_empty) = if operator.is_empty() {
        return Ok(value.cloned().unwrap_or_default());
    } else if let Some(d) = operator.strip_prefix(":=").or(operator.strip_prefix(":-")) {
        (d, true)
    } else if let Some(d) = operator.strip_prefix('=').or(operator.strip_prefix('-')) {
        (d, false)
    } else {
        return Err(SubstituteError::Unsupported(expression.to_string()));
    };
    match value {
        Some(v) if !(when_empty && v.is_empty()) => Ok(v.clone()),
        // A default may itself name variables (`${a:=${b}}`).
        _ => substitute(default, vars),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_build_substitutes_each_object_but_those_that_opt_out() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  env: ${env}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\nspec:\n  replicas: 1\n  x: ${env}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: c\nspec:\n  port: ${port:=80}\n";
        let rendered = Rendered::from_yaml(yaml.to_string()).unwrap();
        let out = post_build(&rendered, &vars(&[("env", "prod")])).unwrap();
        assert_eq!(out.objects.len(), 3);
        assert_eq!(out.objects[0].value["data"]["env"], "prod");
        assert_eq!(out.objects[1].value["spec"]["x"], "${env}");
        // Substituted in the text, so the default is read back as a number, as in Flux.
        assert_eq!(out.objects[2].value["spec"]["port"], 80);
        let err = post_build(&rendered, &vars(&[]))
            .map(|_| ())
            .and_then(|()| {
                post_build(
                    &Rendered::from_yaml("kind: A\nmetadata: {name: x}\nv: ${a^^}\n".into())
                        .unwrap(),
                    &vars(&[]),
                )
                .map(|_| ())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("post-build substitution in A/x: unsupported"),
            "{err}"
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // The examples below are the ones Flux's documentation gives for postBuild.

    #[test]
    fn braced_variables_are_replaced_and_unset_ones_become_empty() {
        let v = vars(&[("cluster_env", "prod"), ("cluster_region", "eu-central-1")]);
        let text = "labels:\n  environment: ${cluster_env}\n  region: \"${cluster_region}\"\n  zone: ${zone}\n";
        assert_eq!(
            substitute(text, &v).unwrap(),
            "labels:\n  environment: prod\n  region: \"eu-central-1\"\n  zone: \n"
        );
    }

    #[test]
    fn defaults_apply_when_unset_and_colon_forms_also_when_empty() {
        let v = vars(&[("set", "value"), ("empty", "")]);
        let cases = [
            ("${missing:=default}", "default"),
            ("${missing:-default}", "default"),
            ("${missing=default}", "default"),
            ("${missing-default}", "default"),
            ("${empty:=default}", "default"),
            ("${empty:-default}", "default"),
            ("${empty=default}", ""),
            ("${empty-default}", ""),
            ("${set:=default}", "value"),
            ("${set=default}", "value"),
            ("${cluster_env:=dev}", "dev"),
            ("${missing:=${set}}", "value"),
            ("${missing:=}", ""),
        ];
        for (text, want) in cases {
            assert_eq!(substitute(text, &v).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn unbraced_variables_and_escapes_are_kept_for_scripts() {
        let v = vars(&[("var", "x"), ("HOME", "/root")]);
        assert_eq!(
            substitute("echo $HOME; echo $${var}; cost: 5$; $$ $", &v).unwrap(),
            "echo $HOME; echo ${var}; cost: 5$; $ $"
        );
    }

    #[test]
    fn other_envsubst_operators_are_refused_naming_the_expression() {
        let v = vars(&[("var", "x")]);
        for text in [
            "${var^^}",
            "${var/a/b}",
            "${#var}",
            "${var:1:2}",
            "${1}",
            "${}",
        ] {
            let error = substitute(text, &v).unwrap_err();
            assert!(
                matches!(error, SubstituteError::Unsupported(_)),
                "{text}: {error:?}"
            );
        }
        assert!(matches!(
            substitute("a: ${var", &v),
            Err(SubstituteError::Unterminated(_))
        ));
    }

    #[test]
    fn names_follow_fluxs_rule() {
        assert!(check_names(["cluster_env", "_x", "A1"]).is_ok());
        for bad in ["1abc", "with-dash", "", "dot.ted"] {
            assert_eq!(
                check_names([bad]),
                Err(SubstituteError::InvalidName(bad.to_string()))
            );
        }
    }

    #[test]
    fn errors_never_carry_a_value() {
        let v = vars(&[("secret", "hunter2")]);
        let error = substitute("${secret^^}", &v).unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
