//! How gitopsd reads the YAML around a build: kustomize's output, the kustomization files a
//! build reaches, and the manifests a generated kustomization lists.
//!
//! serde-saphyr (a maintained successor to the deprecated serde_yaml 0.9) parses into
//! `serde_json::Value`: what a Kubernetes API server takes, so a parsed object can go to a
//! server-side apply as it is. The options below keep the YAML 1.2 reading serde_yaml gave
//! (`yes`, `on`, `1_000` stay strings, as they do for kustomize's own parser), and lift
//! serde-saphyr's default budget, which is sized for configuration files: a kustomization
//! that renders a few thousand objects (CRDs, a whole platform) must parse as it did before.
//! Aliases stay bounded (kustomize never prints any; a hand-written manifest may hold a few).

use serde_json::Value;

/// What kustomize may print at most, in documents and nodes; far above any real render
/// (a large platform renders a few thousand objects, each a few hundred nodes), still a bound.
const MAX_DOCUMENTS: usize = 1_000_000;
const MAX_NODES: usize = 100_000_000;

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = MAX_NODES;
    budget.max_events = MAX_NODES.saturating_mul(4);
    budget.max_total_scalar_bytes = usize::MAX;
    // serde_yaml's recursion limit.
    budget.max_depth = 128;
    let mut options = serde_saphyr::options! {
        strict_booleans: true,
        underscored_numbers_as_strings: true,
        // One sentence: a snippet of the input would spread the message over many lines.
        with_snippet: false,
    };
    options.budget = Some(budget);
    options
}

/// The non-empty documents of a multi-document stream, in order (a stray `---` or a
/// document holding only comments is skipped).
pub(crate) fn documents(text: &str) -> Result<Vec<Value>, serde_saphyr::Error> {
    serde_saphyr::from_multiple_with_options(text, options())
}

/// A file that holds one document.
pub(crate) fn document(text: &str) -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Any scalar as its text: kustomize passes scalars through untouched, so `kind: 5` is
/// possible, and a name is read whatever YAML type it was written as.
pub(crate) fn scalar_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_1_2_scalars_as_kustomize_does() {
        let docs = documents("a: yes\nb: on\nc: 1_000\nd: true\ne: 10\nf: 1.5\ng: null\n").unwrap();
        assert_eq!(
            docs,
            vec![serde_json::json!({
                "a": "yes", "b": "on", "c": "1_000", "d": true, "e": 10, "f": 1.5, "g": null
            })]
        );
    }

    #[test]
    fn skips_empty_documents_and_keeps_order() {
        let docs = documents("---\n# only a comment\n---\nkind: A\n---\n---\nkind: B\n").unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].clone()).collect();
        assert_eq!(kinds, ["A", "B"]);
        assert!(documents("").unwrap().is_empty());
    }

    #[test]
    fn many_documents_parse() {
        // Above serde-saphyr's default budget of 1,024 documents.
        let text = "kind: ConfigMap\nmetadata: {name: x}\n---\n".repeat(3000);
        assert_eq!(documents(&text).unwrap().len(), 3000);
    }

    #[test]
    fn syntax_errors_are_errors() {
        assert!(documents("a: [").is_err());
        assert!(document("a: [").is_err());
    }
}
