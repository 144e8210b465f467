//! The one duration grammar of weir: a number and a unit, or a sum of them
//! (`500ms`, `30s`, `5m`, `1h`, `1d`, `1h30m`), as `humantime` reads it.
//! Used by the topology file, `weir simulate` and the CLI options. A bare
//! number is an error rather than a guess at the unit.

use std::time::Duration;

/// Why a duration was rejected, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadDuration {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for BadDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

const HINT: &str = "write a number and a unit, e.g. 100ms, 30s, 5m, 1h, 1d";

/// Parse a duration (surrounding blanks ignored).
pub(crate) fn parse(s: &str) -> Result<Duration, BadDuration> {
    let t = s.trim();
    if !t.is_empty() && t.parse::<f64>().is_ok() {
        return Err(BadDuration {
            message: format!("{t:?} is not a duration; write \"{t}s\""),
            hint: HINT.to_string(),
        });
    }
    humantime::parse_duration(t).map_err(|e| BadDuration {
        message: format!("bad duration {t:?}: {e}"),
        hint: HINT.to_string(),
    })
}

/// [`parse`] with the error as one line, for command-line options.
pub fn parse_arg(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn a_bare_number_suggests_the_unit() {
        assert_eq!(
            parse("30").unwrap_err().message,
            "\"30\" is not a duration; write \"30s\""
        );
        assert!(parse_arg("2.5")
            .unwrap_err()
            .starts_with("\"2.5\" is not a duration; write \"2.5s\" ("));
        assert!(parse("").is_err());
        assert!(parse("5 parsecs").unwrap_err().message.starts_with("bad duration"));
    }
}
