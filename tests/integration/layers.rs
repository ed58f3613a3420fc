//! The crate's layering, checked from its source: src/lib.rs's header lists the top-level
//! modules bottom-up, and a module may only name modules listed before it (`crate::x`, `super::`
//! paths that leave the module, `use` lists). Inside each top-level module the submodules
//! must not form a cycle either. Test code (`#[cfg(test)] mod ...`) may reach anywhere and is
//! skipped.
//!
//! This is a text scan, not a compiler pass: comments, strings and char literals are blanked
//! first, then paths are read token by token. Paths that start at a child (`use model::X`
//! from `config`) stay inside their own module and cannot create a cross-layer edge; that is
//! why only `crate::` and `super::` paths are followed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `crate::`/`super::` reference, as (referencing module, referenced module path).
fn references(src: &Path) -> Vec<(Module, Module)> {
    let mut out = Vec::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut module: Module = relative
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        if module
            .last()
            .is_some_and(|last| last == "mod" || last == "lib" || last == "main")
        {
            module.pop();
        }
        if relative == Path::new("main") {
            continue; // The binary uses the library by its name, as any other crate would.
        }
        let text = blank_literals_and_comments(&fs::read_to_string(&file).unwrap());
        scan(&text, &module, &mut out);
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Replaces comments, string and char literals with spaces (newlines kept), so that braces and
/// paths inside them are not read as code.
fn blank_literals_and_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let at = |i: usize, n: usize| chars.get(i + n).copied().unwrap_or('\0');
        if chars[i] == '/' && at(i, 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if chars[i] == '/' && at(i, 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i, 1) == '*' {
                    depth += 1;
                } else if chars[i] == '*' && at(i, 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if chars[i] == 'r'
            && (at(i, 1) == '"' || (at(i, 1) == '#' && !is_ident(prev(&chars, i))))
        {
            // Raw string: r"..." or r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body_start = j + 1;
            let tail: String = chars[body_start..].iter().collect();
            let body_len = tail
                .find(&close)
                .map(|b| tail[..b].chars().count())
                .unwrap_or(tail.chars().count());
            let end = (body_start + body_len + close.chars().count()).min(chars.len());
            for &c in &chars[i..end] {
                out.push(blank(c));
            }
            i = end;
        } else if chars[i] == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if chars[i] == '\''
            && (at(i, 2) == '\''
                || (at(i, 1) == '\\' && chars[i + 2..].iter().take(10).any(|&c| c == '\'')))
        {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn prev(chars: &[char], i: usize) -> char {
    if i == 0 {
        ' '
    } else {
        chars[i - 1]
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        out.push(match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 1;
                Token::PathSep
            }
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => Token::Other,
        });
        i += 1;
    }
    out
}

/// Walks the tokens of one file in module `module`, following inline `mod x { ... }` blocks
/// and skipping `#[cfg(test)]` ones.
fn scan(text: &str, module: &Module, out: &mut Vec<(Module, Module)>) {
    let tokens = tokens(text);
    // (module path, brace depth at which its block closes, skipped)
    let mut stack: Vec<(Module, usize, bool)> = vec![(module.clone(), 0, false)];
    let mut depth = 0usize;
    let mut i = 0;
    let mut cfg_test = false;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(word) if word == "cfg" => {
                if matches!(tokens.get(i + 2), Some(Token::Ident(w)) if w == "test") {
                    cfg_test = true;
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    let (parent, _, skipped) = stack.last().unwrap().clone();
                    let mut inner = parent;
                    inner.push(name.clone());
                    depth += 1;
                    stack.push((inner, depth, skipped || cfg_test));
                    cfg_test = false;
                    i += 3;
                    continue;
                }
                cfg_test = false;
            }
            Token::Open => depth += 1,
            Token::Close => {
                if stack.len() > 1 && stack.last().unwrap().1 == depth {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word)
                if word == "fn"
                    || word == "struct"
                    || word == "enum"
                    || word == "impl"
                    || word == "use" =>
            {
                cfg_test = false;
            }
            Token::Ident(word)
                if (word == "crate" || word == "super")
                    && tokens.get(i + 1) == Some(&Token::PathSep) =>
            {
                let (current, _, skipped) = stack.last().unwrap().clone();
                let mut base: Module = if word == "crate" {
                    Vec::new()
                } else {
                    current[..current.len().saturating_sub(1)].to_vec()
                };
                let mut j = i + 2;
                // More `super::`.
                while matches!(tokens.get(j), Some(Token::Ident(w)) if w == "super")
                    && tokens.get(j + 1) == Some(&Token::PathSep)
                {
                    base.pop();
                    j += 2;
                }
                let mut targets = Vec::new();
                j = read_path(&tokens, j, base, &mut targets);
                if !skipped {
                    out.extend(targets.into_iter().map(|t| (current.clone(), t)));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Reads `a::b::{c, d::e}` from `tokens[j]` on, below `base`, pushing the module-ish paths it
/// names (two segments are enough for the checks here). Returns the index after the path.
fn read_path(tokens: &[Token], mut j: usize, mut base: Module, targets: &mut Vec<Module>) -> usize {
    loop {
        match tokens.get(j) {
            Some(Token::Ident(name)) => {
                base.push(name.clone());
                j += 1;
                if tokens.get(j) == Some(&Token::PathSep) {
                    j += 1;
                    continue;
                }
                targets.push(base);
                return j;
            }
            Some(Token::Open) => {
                j += 1;
                loop {
                    match tokens.get(j) {
                        Some(Token::Close) => return j + 1,
                        Some(Token::Comma) => {
                            j += 1;
                            continue;
                        }
                        None => return j,
                        _ => j = read_path(tokens, j, base.clone(), targets),
                    }
                    // Skip `as alias` and anything else up to the next comma or brace.
                    while !matches!(
                        tokens.get(j),
                        Some(Token::Comma) | Some(Token::Close) | None
                    ) {
                        j += 1;
                    }
                }
            }
            _ => {
                if !base.is_empty() {
                    targets.push(base);
                }
                return j;
            }
        }
    }
}

/// The top-level modules in the order src/lib.rs's header lists them, lowest first
/// (`//! 1. \`error\` — ...`).
fn declared_layers(src: &Path) -> Vec<String> {
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| {
            let item = line.strip_prefix("//!")?.trim_start();
            let (number, rest) = item.split_once(". `")?;
            number.parse::<u32>().ok()?;
            Some(rest.split_once('`')?.0.to_string())
        })
        .collect()
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Depth-first search that reports each back edge's cycle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            found.push(path[at..].to_vec());
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, found);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn each_top_level_module_uses_only_the_layers_declared_before_it() {
    let src = src_dir();
    let layers = declared_layers(&src);
    assert!(
        layers.len() > 5,
        "src/lib.rs declares its modules: {layers:?}"
    );
    let rank = |m: &str| layers.iter().position(|l| l == m);
    let mut upward = BTreeSet::new();
    for (from, to) in references(&src) {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a == b {
            continue;
        }
        let (Some(ra), Some(rb)) = (rank(a), rank(b)) else {
            continue; // Not a module (a function or type at the crate root).
        };
        if rb > ra {
            upward.insert(format!("{} -> {}", from.join("::"), to.join("::")));
        }
    }
    assert!(
        upward.is_empty(),
        "references from a lower layer to a higher one (src/lib.rs order {layers:?}):\n{}",
        upward.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn submodules_of_each_layer_form_no_cycle() {
    let src = src_dir();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in references(&src) {
        // Sibling edges one level below a top-level module; the parent module itself (its
        // mod.rs re-exports and entry points) is the layer's facade and not a node here.
        if from.len() >= 2 && to.len() >= 2 && from[0] == to[0] && from[1] != to[1] {
            let a = format!("{}::{}", from[0], from[1]);
            let b = format!("{}::{}", to[0], to[1]);
            if src.join(&to[0]).join(format!("{}.rs", to[1])).exists()
                || src.join(&to[0]).join(&to[1]).is_dir()
            {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    let found = cycles(&edges);
    assert!(found.is_empty(), "submodule cycles: {found:?}");
}

#[test]
fn the_scanner_reads_grouped_and_relative_paths() {
    let text = blank_literals_and_comments(
        "use crate::{a::B, c::{d, e::F}};\n// crate::commented\nlet s = \"crate::quoted\";\nfn f() { super::super::g::h(); }\n#[cfg(test)]\nmod tests { use crate::hidden; }\n",
    );
    let mut out = Vec::new();
    scan(&text, &vec!["x".into(), "y".into(), "z".into()], &mut out);
    let named: Vec<String> = out.iter().map(|(_, to)| to.join("::")).collect();
    assert_eq!(named, ["a::B", "c::d", "c::e::F", "x::g::h"]);
}
