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
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        } else {
            println!("{}", text());
        }
        Ok(())
    }
}
