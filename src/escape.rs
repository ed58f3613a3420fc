//! Control characters from outside (file names in a repository, request paths, names in the
//! config) must not reach line-oriented output raw: a `\n` in a file name would forge a log
//! line, an ESC sequence would drive the operator's terminal. [`control`] escapes them where
//! such text leaves gitopsd as plain text: text logs (see `cli::log`), HTTP error bodies and
//! the CLI's own output. JSON output needs nothing: serde escapes control characters.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character written as an escape: `\n`, `\r`, `\t`, others as
/// `\u{1b}` (Rust's spelling). C0, DEL, C1 and the Unicode line and paragraph separators
/// count. Everything else, backslashes included, stays as it is, so ordinary paths and
/// messages read the same.
pub fn control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            // `escape_debug` spells \n, \r, \t and \u{..}; writing to a String cannot fail.
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

#[cfg(test)]
mod tests {
    use super::control;

    #[test]
    fn escapes_control_characters_only() {
        assert_eq!(control("plain/path.yaml"), "plain/path.yaml");
        assert_eq!(
            control("a\nINFO forged\r\t\u{1b}[31m\u{7f}\u{85}\u{2028}"),
            "a\\nINFO forged\\r\\t\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}"
        );
        assert_eq!(control("C:\\dir ünïcode"), "C:\\dir ünïcode");
    }
}
