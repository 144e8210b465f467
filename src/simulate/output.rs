//! The `weir test` input format: one JSON object per record,
//! `{"topic":…,"partition":N,"timestamp":<epoch ms>,"key":…,"value":"<raw payload text>"}`.
//! A payload that is not valid UTF-8 cannot be a JSON string, so such a
//! record carries `"value_base64":"<standard base64 of the bytes>"` instead
//! of `value`.

use super::generator::SimRecord;
use super::payload::push_json_string;

/// One line (without the newline) for `rec` on `topic`.
pub(crate) fn jsonl_line(topic: &str, rec: &SimRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(rec.payload.len() + 128);
    out.extend_from_slice(b"{\"topic\":");
    push_json_string(&mut out, topic);
    out.extend_from_slice(
        format!(
            ",\"partition\":{},\"timestamp\":{},\"key\":",
            rec.partition, rec.timestamp_ms
        )
        .as_bytes(),
    );
    push_json_string(&mut out, &rec.key);
    match rec.payload_str() {
        Some(text) => {
            out.extend_from_slice(b",\"value\":");
            push_json_string(&mut out, text);
        }
        None => {
            out.extend_from_slice(b",\"value_base64\":\"");
            out.extend_from_slice(crate::support::base64::encode(&rec.payload).as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::simulate::generator::RecordKind;

    #[test]
    fn lines_carry_text_values_or_base64_for_invalid_utf8() {
        let good = SimRecord {
            partition: 2,
            timestamp_ms: 1_742_448_390_000,
            key: "1587410".into(),
            payload: "{\"REGION\":\"홍대 관광특구\"}".as_bytes().to_vec(),
            kind: RecordKind::Good,
        };
        let line: Value = serde_json::from_slice(&jsonl_line("parking_status", &good)).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"topic":"parking_status","partition":2,"timestamp":1_742_448_390_000_i64,
                "key":"1587410","value":"{\"REGION\":\"홍대 관광특구\"}"})
        );
        let text = String::from_utf8(jsonl_line("parking_status", &good)).unwrap();
        assert!(text.starts_with("{\"topic\":\"parking_status\",\"partition\":2,\"timestamp\":1742448390000,\"key\":"));

        let bad = SimRecord {
            payload: vec![b'{', 0x80, b'}'],
            ..good
        };
        let line: Value = serde_json::from_slice(&jsonl_line("parking_status", &bad)).unwrap();
        assert_eq!(line["value_base64"], "e4B9");
        assert!(line.get("value").is_none());
    }
}
