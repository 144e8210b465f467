//! Time-zone names (IANA, e.g. `Asia/Seoul`), with a "did you mean" for a
//! misspelt one, wherever a zone is read.

use chrono_tz::Tz;

/// Why a time-zone name was rejected: the message, and a hint (the closest
/// known name, or what a name looks like).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownZone {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for UnknownZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

/// Parse an IANA time-zone name (surrounding blanks ignored).
pub(crate) fn parse(name: &str) -> Result<Tz, UnknownZone> {
    name.trim().parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
        UnknownZone {
            message: format!("unknown time zone {name:?}"),
            hint: match super::did_you_mean(name.trim(), names) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "use an IANA name such as Asia/Seoul or UTC".to_string(),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_names_and_hints() {
        assert_eq!(super::parse(" Asia/Seoul "), Ok(chrono_tz::Asia::Seoul));
        let e = super::parse("Asia/Seol").unwrap_err();
        assert_eq!(e.hint, "did you mean `Asia/Seoul`?");
        assert_eq!(
            e.to_string(),
            "unknown time zone \"Asia/Seol\" (did you mean `Asia/Seoul`?)"
        );
        assert!(super::parse("nowhere at all").unwrap_err().hint.contains("IANA"));
    }
}
