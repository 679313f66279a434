//! Text or JSON output for subcommands.

use serde::Serialize;

/// Where a subcommand's result goes: human-readable text or one JSON object per line.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// Text output unless `json`.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// Whether JSON output was asked for.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as one JSON line, or `text` when JSON was not asked for.
    pub fn emit<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        use std::io::Write;
        let line = if self.json {
            serde_json::to_string(value)?
        } else {
            text()
        };
        match writeln!(std::io::stdout().lock(), "{line}") {
            // A closed pipe (`sotto predict ... | head`) is the reader's choice, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        }
    }
}
