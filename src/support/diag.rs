//! Diagnostics for `weir validate`: every problem with its file position,
//! what is wrong and, where we can guess, a hint.

use std::fmt;

use serde_saphyr::Spanned;

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn at<T>(span: &Spanned<T>, message: impl Into<String>) -> Self {
        Self {
            line: span.referenced.line(),
            column: span.referenced.column(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// All problems found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Read `path` and hand its text to `parse`; an unreadable file is one
    /// diagnostic at 1:1, and `parse`'s diagnostics are given the file name.
    pub(crate) fn load<T>(
        path: &std::path::Path,
        parse: impl FnOnce(&str) -> Result<T, Vec<Diagnostic>>,
    ) -> Result<T, Diagnostics> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Diagnostics {
            file: file.clone(),
            items: vec![Diagnostic {
                line: 1,
                column: 1,
                message: format!("cannot read file: {e}"),
                hint: None,
            }],
        })?;
        parse(&text).map_err(|items| Diagnostics { file, items })
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: error: {}", self.file, d.line, d.column, d.message)?;
            if let Some(h) = &d.hint {
                write!(f, "\n  hint: {h}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

pub(crate) use crate::support::did_you_mean;

/// Turn a YAML/serde error into a diagnostic, adding a "did you mean" for
/// unknown fields and variants.
pub(crate) fn from_yaml_error(err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    // The Display form carries a source snippet; keep its first line only.
    let full = err.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML");
    // Drop the "error: line N column M: " prefix: we print file:line:col.
    let message = match first.split_once(": ") {
        Some((_, rest)) if first.starts_with("error: line ") => rest.split_once(": ").map(|(_, m)| m).unwrap_or(rest),
        _ => first,
    }
    .to_string();
    let hint = unknown_name_hint(&full);
    tracing::trace!(message = %full, "yaml error");
    Diagnostic {
        line,
        column,
        message,
        hint,
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and "unknown
/// variant") messages, suggest the closest expected name.
fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (word, rest) = rest.split_once('`')?;
    // serde-saphyr writes "expected one of a, b, c"; serde's own wording is
    // "expected `a` or `b`".
    let list = rest.split_once("expected").map(|(_, l)| l).unwrap_or("");
    let list = list.lines().next().unwrap_or("").trim_start_matches(" one of");
    let expected: Vec<&str> = list
        .split(',')
        .flat_map(|p| p.split(" or "))
        .map(|p| p.trim().trim_matches('`'))
        .filter(|p| !p.is_empty())
        .collect();
    match did_you_mean(word, expected.iter().copied()) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None if !expected.is_empty() => Some(format!("expected one of: {}", expected.join(", "))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_closest_field() {
        let msg = "unknown field `grase`, expected one of group_by, tumbling, grace";
        assert_eq!(unknown_name_hint(msg).as_deref(), Some("did you mean `grace`?"));
    }

    #[test]
    fn lists_fields_when_nothing_is_close() {
        let msg = "unknown field `zzz`, expected `topic` or `key`";
        assert_eq!(unknown_name_hint(msg).as_deref(), Some("expected one of: topic, key"));
        let msg = "unknown field `topc`, expected one of topic, value, key";
        assert_eq!(unknown_name_hint(msg).as_deref(), Some("did you mean `topic`?"));
        let msg = "unknown field `zzz`, expected `topic` or `key`";
        assert_eq!(unknown_name_hint(msg).as_deref(), Some("expected one of: topic, key"));
    }
}
