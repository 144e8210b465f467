//! Record values as the city API writes them: the 16 string fields of a
//! good snapshot in the feed's order, and the malformed payloads the real
//! feed produces (an error body, a cut-off object, broken UTF-8, a
//! non-numeric capacity, a missing field).

use chrono::{DateTime, Datelike, Timelike};

use super::catalog::{Lot, Region};
use super::curve::KST_OFFSET_SECS;

/// What a bad record is wrong with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum BadKind {
    /// Not JSON at all: an API error page, a timeout message, or a payload
    /// cut short.
    NotJson,
    /// JSON whose bytes are not valid UTF-8.
    InvalidUtf8,
    /// `CAPACITY` is not a number (`"abc"`).
    NonNumeric,
    /// A required field is missing.
    MissingField,
}

impl BadKind {
    pub(crate) const ALL: [BadKind; 4] = [
        BadKind::NotJson,
        BadKind::InvalidUtf8,
        BadKind::NonNumeric,
        BadKind::MissingField,
    ];
}

/// Field names of a `parking_status` value, in the feed's order.
pub const FIELDS: [&str; 16] = [
    "REGION",
    "REGION_CODE",
    "PARKING_NAME",
    "PARKING_CODE",
    "TYPE",
    "CAPACITY",
    "OCCUPIED_SPOTS",
    "LAST_UPDATE",
    "IS_REALTIME_STATUS_PROVIDED",
    "PAY_YN",
    "BASE_RATE",
    "BASE_TIME",
    "ADD_RATE",
    "ADD_TIME",
    "LATITUDE",
    "LONGITUDE",
];

/// Fields a "missing field" bad record drops: ones the parking topology
/// cannot do without (a missing `CAPACITY` would just count as 0).
pub(super) const REQUIRED_FIELDS: [&str; 4] = ["REGION", "REGION_CODE", "PARKING_CODE", "IS_REALTIME_STATUS_PROVIDED"];

/// An error body the city API really returns instead of JSON.
const API_ERROR_XML: &str = "<RESULT><CODE>ERROR-500</CODE><MESSAGE>서버 오류입니다. 지속적으로 발생시 열린 데이터 광장으로 문의(Q&A) 바랍니다.</MESSAGE></RESULT>";
const GATEWAY_TIMEOUT: &str = "upstream request timeout";

/// One lot's status at one instant, ready to be written as a value.
pub(super) struct Snapshot<'a> {
    pub(super) region: &'a Region,
    pub(super) lot: &'a Lot,
    pub(super) occupied: u32,
    pub(super) timestamp_ms: i64,
}

impl Snapshot<'_> {
    /// The value JSON; `capacity` overrides `CAPACITY`, `skip` drops a field.
    pub(super) fn json(&self, capacity: Option<&str>, skip: Option<&str>) -> Vec<u8> {
        let lot = self.lot;
        let cap = lot.capacity.to_string();
        let (occupied, last_update) = if lot.realtime {
            (self.occupied.to_string(), format_kst(self.timestamp_ms))
        } else {
            // Lots without live status leave both empty, as the city does.
            (String::new(), String::new())
        };
        let values: [&str; 16] = [
            &self.region.name,
            &self.region.code,
            &lot.name,
            &lot.code,
            &lot.lot_type,
            capacity.unwrap_or(&cap),
            &occupied,
            &last_update,
            if lot.realtime { "Y" } else { "N" },
            &lot.pay_yn,
            &lot.base_rate,
            &lot.base_time,
            &lot.add_rate,
            &lot.add_time,
            &lot.latitude,
            &lot.longitude,
        ];
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        let mut first = true;
        for (name, value) in FIELDS.iter().zip(values) {
            if Some(*name) == skip {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_string(&mut out, name);
            out.push(b':');
            push_json_string(&mut out, value);
        }
        out.push(b'}');
        out
    }

    pub(super) fn bad(&self, kind: BadKind, u: f64, variant: u32) -> Vec<u8> {
        match kind {
            BadKind::NotJson => match variant % 3 {
                0 => API_ERROR_XML.as_bytes().to_vec(),
                1 => GATEWAY_TIMEOUT.as_bytes().to_vec(),
                _ => {
                    // Cut short on a character boundary: an unclosed object.
                    let full = self.json(None, None);
                    let text = String::from_utf8_lossy(&full);
                    let mut cut = 1 + (u * (text.len() - 2) as f64) as usize;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.as_bytes()[..cut.max(1)].to_vec()
                }
            },
            BadKind::InvalidUtf8 => {
                // Drop the lead byte of the first multi-byte character (the
                // region name is Korean), leaving stray continuation bytes,
                // as a byte-oriented proxy that cuts strings would.
                let mut bytes = self.json(None, None);
                match bytes.iter().position(|&b| b >= 0xC0) {
                    Some(i) => {
                        bytes.remove(i);
                    }
                    None => bytes.insert(bytes.len() - 1, 0xFF),
                }
                bytes
            }
            BadKind::NonNumeric => self.json(Some("abc"), None),
            BadKind::MissingField => {
                let field = REQUIRED_FIELDS[(variant as usize) % REQUIRED_FIELDS.len()];
                self.json(None, Some(field))
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in Korea Standard Time, as `LAST_UPDATE` is written.
pub(crate) fn format_kst(timestamp_ms: i64) -> String {
    let local = timestamp_ms.div_euclid(1000).saturating_add(KST_OFFSET_SECS);
    match DateTime::from_timestamp(local, 0) {
        Some(t) => {
            let t = t.naive_utc();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        // Unreachable for the validated start times; keep the feed's shape.
        None => String::new(),
    }
}

/// Append `s` as a JSON string literal.
pub(crate) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\c\n\u{1}홍대");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}홍대");
    }
}
