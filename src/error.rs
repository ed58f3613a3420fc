//! Error text shared by every stage.

use std::error::Error;

/// An error and its `source()` chain on one line, outermost first: the messages joined by
/// `": "`, leaving out a message that an earlier one already contains verbatim (kube, hyper
/// and object_store often repeat their cause inside their own message). For example
/// `cannot connect: tcp connect error: Connection refused (os error 111)`.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    join(messages(error))
}

/// Each message of the chain, outermost first, as `Display` writes it.
pub fn messages<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = String> + 'a {
    std::iter::successors(Some(error), |&e| e.source()).map(|e| e.to_string())
}

/// [`chain`], with only the first line of each message, trimmed, and blank ones left out: a
/// status sentence stays one line even when a library's message (gix's) spans several.
pub fn chain_lines(error: &(dyn Error + 'static)) -> String {
    join(
        messages(error)
            .map(|m| m.lines().next().unwrap_or("").trim().to_string())
            .filter(|m| !m.is_empty()),
    )
}

/// `messages` joined as [`chain`] joins them, for a caller that first reshapes each message.
pub fn join(messages: impl IntoIterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for message in messages {
        if !parts.iter().any(|p| p.contains(&message)) {
            parts.push(message);
        }
    }
    parts.join(": ")
}

/// Every error in `error`'s chain, outermost first, for a caller that looks for a type with
/// `downcast_ref`. Unlike the `source()` chain it includes the error an `io::Error` wraps
/// (`io::Error::source()` skips it, and TLS streams report their verdict that way, sometimes
/// an `io::Error` inside another).
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    std::iter::successors(Some(error), |&e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => match io.get_ref() {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        },
        None => e.source(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layers(texts: &[&'static str]) -> Layer {
        let mut cause = None;
        for text in texts.iter().rev() {
            cause = Some(Box::new(Layer { text, cause }));
        }
        *cause.expect("at least one layer")
    }

    #[test]
    fn joins_the_chain_outermost_first() {
        let error = layers(&["fetch failed", "tcp connect error", "Connection refused"]);
        assert_eq!(
            chain(&error),
            "fetch failed: tcp connect error: Connection refused"
        );
    }

    #[test]
    fn a_cause_its_parent_already_quotes_is_left_out() {
        let error = layers(&["request failed: timed out", "timed out", "deadline"]);
        assert_eq!(chain(&error), "request failed: timed out: deadline");
    }

    #[test]
    fn causes_look_inside_io_errors() {
        let inner = layers(&["certificate rejected"]);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, inner));
        let found: Vec<bool> = causes(&io).map(|e| e.is::<Layer>()).collect();
        assert_eq!(found, [false, false, true]);
    }

    #[test]
    fn a_single_error_is_its_message() {
        assert_eq!(chain(&layers(&["no such bucket"])), "no such bucket");
    }
}
