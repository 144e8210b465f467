//! Byte sizes on the command line (`--state-memory 128MiB`): a number and a
//! unit, `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB`
//! (powers of 1000), case-insensitive, blanks between allowed. A bare
//! number is an error rather than a guess at the unit, as for durations.

/// Parse a size in bytes.
pub fn parse(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let hint = "write a number and a unit, e.g. 512MiB, 2GiB, 64MB";
    if num.is_empty() {
        return Err(format!("{t:?} is not a size ({hint})"));
    }
    let value: f64 = num.parse().map_err(|_| format!("{t:?} is not a size ({hint})"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" => return Err(format!("{t:?} has no unit; write \"{t}MiB\" ({hint})")),
        "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return Err(format!("unknown unit {unit:?} in {t:?} ({hint})")),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= usize::MAX as f64 {
        return Err(format!("{t:?} is too large"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_need_a_unit() {
        assert_eq!(parse("128MiB"), Ok(128 << 20));
        assert_eq!(parse(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse("1.5gib"), Ok(3 << 29));
        assert_eq!(parse("64MB"), Ok(64_000_000));
        assert_eq!(parse("512k"), Ok(512 << 10));
        assert_eq!(parse("100B"), Ok(100));
        assert!(parse("128").unwrap_err().contains("\"128MiB\""));
        assert!(parse("MiB").is_err());
        assert!(parse("12 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("1.2.3MiB").is_err());
    }
}
