//! Logging: the subscriber, writing to standard output with credentials removed.
//! The per-request span is the HTTP layer's (`http::request_span`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is an `EnvFilter` directive such as
/// `info` or `tenant_router=debug,info`; `json` writes one JSON object per line,
/// the event's fields at the top and the request span's (method, path, route,
/// request id, tenant id) under `span`. Every line passes through
/// [`RedactingStdout`], so a URL with credentials that a dependency puts in a span
/// field (sea-orm's `connect` span holds the whole connection string) is scrubbed.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(|| RedactingStdout);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
    // A panic's message goes to the log like any error, scrubbed, in the span of
    // the request that panicked (the HTTP stack answers it 500 and goes on);
    // the default hook would print it raw to standard error.
    std::panic::set_hook(Box::new(|panic| {
        tracing::error!(panic = %crate::secret::redact(&panic.to_string()), "panicked");
    }));
}

/// Standard output with credentials removed from every line (see [`crate::secret::redact`]).
/// The fmt layer writes each event with one `write_all` of the whole line, so a URL
/// is never split across two writes.
pub struct RedactingStdout;

impl std::io::Write for RedactingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = crate::secret::redact(&text);
        std::io::stdout().lock().write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}
