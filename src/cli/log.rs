//! The text log format's field formatter. tracing-subscriber's default one writes messages and
//! `%display` fields raw (it only neutralises ESC and a few other terminal controls), so a
//! newline in a repository's file name, a config value or a request path would start a forged
//! log line. This one writes the same `message key=value ...` layout with every control
//! character escaped (see [`crate::escape::control`]). The JSON format needs no help.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;

/// Formats event and span fields with control characters escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let text = value.to_string();
        let text = crate::escape::control(&text);
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = match field.name() {
            "message" => write!(self.writer, "{separator}{text}"),
            name => write!(
                self.writer,
                "{separator}{}={text}",
                name.trim_start_matches("r#")
            ),
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default formatter: the message as written, other strings quoted.
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::EscapedFields;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_in_fields_and_messages_are_escaped() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let file = "evil\nINFO gitopsd: forged\r\u{1b}[2J";
            let span = tracing::info_span!("reconcile", source = %"a\nb");
            let _entered = span.enter();
            tracing::warn!(path = %file, name = file, count = 3, "cannot read {file}");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(!out.contains(['\r', '\u{1b}']), "{out:?}");
        assert!(out.ends_with('\n'));
        assert!(
            out.contains(r"reconcile{source=a\nb}"),
            "span fields: {out:?}"
        );
        assert!(
            out.contains(
                r#"cannot read evil\nINFO gitopsd: forged\r\u{1b}[2J path=evil\nINFO gitopsd: forged\r\u{1b}[2J name="evil\nINFO gitopsd: forged\r\u{1b}[2J" count=3"#
            ),
            "{out:?}"
        );
    }
}
