//! The text log format's field formatter. tracing-subscriber's default one writes messages and
//! `%display` fields raw (it only neutralises ESC and a few other terminal controls), so a
//! newline in a repository's file name, a config value or a request path would start a forged
//! log line. This one writes the same `message key=value ...` layout with every control
//! character escaped (see [`crate::escape::control`]). The JSON format needs no help.
//!
//! Under systemd, stderr is often a stream into the journal, which stamps every line with its
//! own time and takes its priority from a `<N>` prefix (sd-daemon(3)). [`JournalFormat`]
//! writes lines for it: the priority prefix, no timestamp, no colours, no level word.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// True when stderr is the journal stream systemd connected: `JOURNAL_STREAM` names its
/// `device:inode`, which must match stderr's (a child that inherited the variable but writes
/// elsewhere must not use the journal format), as systemd.exec(5) prescribes.
pub fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the buffer, which is read only on success.
    if unsafe { libc::fstat(2, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    device.parse::<u64>() == Ok(stat.st_dev) && inode.parse::<u64>() == Ok(stat.st_ino)
}

/// One journal line per event: `<priority>span{fields}: message key=value`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // syslog priorities: err, warning, info, debug.
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_str(": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

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
    use super::{EscapedFields, JournalFormat};
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

    #[test]
    fn journal_lines_carry_a_priority_and_no_timestamp() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .event_format(JournalFormat)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("sync", source = %"default/app");
            let _entered = span.enter();
            tracing::error!("fetch failed");
            tracing::warn!(attempt = 2, "retrying");
            tracing::info!("stored\nforged");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            out,
            "<3>sync{source=default/app}: fetch failed\n\
             <4>sync{source=default/app}: retrying attempt=2\n\
             <6>sync{source=default/app}: stored\\nforged\n"
        );
    }
}
