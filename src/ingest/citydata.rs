//! The Seoul real-time citydata API (`citydata`, data.seoul.go.kr OA-21285),
//! as far as parking goes: hotspot lists, request URLs, response parsing,
//! the `PRK_STTS` → `parking_status` mapping and the per-poll deduplication
//! of lots. Pure functions only; the poller does the I/O.
//!
//! About 500 lines of code; the rest is its tests, on the captured poll.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::simulate::payload::push_json_string;
use crate::simulate::FIELDS;

/// The city API's address (plain HTTP on port 8088).
pub(crate) const DEFAULT_BASE_URL: &str = "http://openapi.seoul.go.kr:8088";

/// The result code of a successful call.
pub(crate) const RESULT_OK: &str = "INFO-000";

/// The 30 hotspots the original pipeline polled (`data/seoul_hotspots.json`).
pub(crate) const DEFAULT_HOTSPOTS_JSON: &str = include_str!("../../data/seoul_hotspots.json");

/// `parking_status` field ← `PRK_STTS` entry field, in [`FIELDS`] order
/// after `REGION` and `REGION_CODE` (which come from `CITYDATA`).
pub(crate) const ENTRY_FIELDS: [(&str, &str); 14] = [
    ("PARKING_NAME", "PRK_NM"),
    ("PARKING_CODE", "PRK_CD"),
    ("TYPE", "PRK_TYPE"),
    ("CAPACITY", "CPCTY"),
    ("OCCUPIED_SPOTS", "CUR_PRK_CNT"),
    ("LAST_UPDATE", "CUR_PRK_TIME"),
    ("IS_REALTIME_STATUS_PROVIDED", "CUR_PRK_YN"),
    ("PAY_YN", "PAY_YN"),
    ("BASE_RATE", "RATES"),
    ("BASE_TIME", "TIME_RATES"),
    ("ADD_RATE", "ADD_RATES"),
    ("ADD_TIME", "ADD_TIME_RATES"),
    ("LATITUDE", "LAT"),
    ("LONGITUDE", "LNG"),
];

/// One hotspot (`POIxxx`) to poll.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Hotspot {
    pub code: String,
    /// Korean name; used for `REGION` if the response lacks `AREA_NM`.
    #[serde(default)]
    pub name: String,
}

/// A hotspot list that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HotspotsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a JSON array of {{\"code\": \"POI…\", \"name\": \"…\"}} objects: {error}")]
    Format { path: String, error: String },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

/// The built-in list: the 30 hotspots of the original pipeline.
pub(crate) fn default_hotspots() -> Result<Vec<Hotspot>, HotspotsError> {
    parse_hotspots("built-in hotspot list", DEFAULT_HOTSPOTS_JSON)
}

/// Read a hotspot list file (the format of `data/seoul_hotspots.json`).
pub(crate) fn load_hotspots(path: &Path) -> Result<Vec<Hotspot>, HotspotsError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| HotspotsError::Read {
        path: name.clone(),
        source,
    })?;
    parse_hotspots(&name, &text)
}

/// Parse and check a hotspot list: not empty, codes present and distinct.
pub(crate) fn parse_hotspots(path: &str, text: &str) -> Result<Vec<Hotspot>, HotspotsError> {
    let list: Vec<Hotspot> = serde_json::from_str(text).map_err(|e| HotspotsError::Format {
        path: path.to_string(),
        error: e.to_string(),
    })?;
    let invalid = |problem: String| HotspotsError::Invalid {
        path: path.to_string(),
        problem,
    };
    if list.is_empty() {
        return Err(invalid("the hotspot list is empty".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, h) in list.iter().enumerate() {
        if h.code.trim().is_empty() {
            return Err(invalid(format!("hotspot #{} has an empty code", i + 1)));
        }
        if !seen.insert(h.code.as_str()) {
            return Err(invalid(format!("hotspot {} is listed twice", h.code)));
        }
    }
    Ok(list)
}

/// The API key. Its `Debug` and `Display` never show it, so it cannot leak
/// into a log line by accident; [`ApiKey::redact`] scrubs it from text that
/// came from elsewhere (error messages, response bodies).
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    pub(crate) fn new(key: impl Into<String>) -> Self {
        Self(key.into().trim().to_string())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key itself, for building request URLs only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key (raw or percent-encoded)
    /// replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_string();
        }
        let encoded = encode_path_segment(&self.0);
        let mut out = text.replace(&self.0, "***");
        if encoded != self.0 {
            out = out.replace(&encoded, "***");
        }
        out
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Percent-encode one URL path segment (RFC 3986: unreserved characters
/// stay, every other byte becomes `%XX`), so a key or a hotspot given by its
/// Korean name cannot break the path.
pub(crate) fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{base}/{KEY}/json/citydata/1/5/{AREA_CD}`.
pub(crate) fn request_url(base: &str, key: &ApiKey, area: &str) -> String {
    format!(
        "{}/{}/json/citydata/1/5/{}",
        base.trim_end_matches('/'),
        encode_path_segment(key.expose()),
        encode_path_segment(area)
    )
}

/// The same URL with the key replaced by `***`, for logs.
pub(crate) fn display_url(base: &str, area: &str) -> String {
    format!(
        "{}/***/json/citydata/1/5/{}",
        base.trim_end_matches('/'),
        encode_path_segment(area)
    )
}

/// What one citydata response held.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Response {
    /// `CITYDATA.AREA_NM` / `AREA_CD`, if present.
    pub area_name: Option<String>,
    pub area_code: Option<String>,
    /// The entries of `CITYDATA.PRK_STTS` (objects only).
    pub parking: Vec<serde_json::Map<String, Value>>,
    /// Entries of `PRK_STTS` that were not objects (skipped).
    pub skipped: usize,
}

/// Why a response body could not be used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ResponseError {
    /// The API answered with a result code other than `INFO-000`.
    Api { code: String, message: String },
    /// Not the citydata shape: not JSON, cut short, no `CITYDATA`, ...
    Malformed(String),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Api { code, message } => {
                write!(f, "API result {code}")?;
                if !message.is_empty() {
                    write!(f, " ({message})")?;
                }
                if let Some(hint) = api_code_hint(code) {
                    write!(f, ": {hint}")?;
                }
                Ok(())
            }
            ResponseError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

/// What the city's documented result codes mean for a poller.
pub(crate) fn api_code_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "INFO-100" => "the API key is not valid (check --api-key / WEIR_CITYDATA_KEY)",
        "INFO-200" => "no data for this hotspot",
        "INFO-300" => "the API key has been restricted by the city's administrator",
        "INFO-400" => "the API key has no permission for this service",
        "ERROR-300" | "ERROR-301" | "ERROR-310" | "ERROR-331" | "ERROR-332" | "ERROR-333" | "ERROR-334"
        | "ERROR-335" | "ERROR-336" => "the request was refused (check --base-url and the hotspot code)",
        "ERROR-337" => "the key's daily call quota is used up; calls succeed again tomorrow (KST)",
        "ERROR-500" | "ERROR-600" | "ERROR-601" => "server error on the city's side",
        _ => return None,
    })
}

/// Metric label for an API result code: the code itself when it is one of
/// the documented ones (a bounded set), else `other`.
pub(crate) fn api_code_label(code: &str) -> &str {
    if api_code_hint(code).is_some() {
        code
    } else {
        "other"
    }
}

/// Result codes worth asking again in the same cycle: the city's server
/// errors. Key, quota and request errors will not change by retrying.
pub(crate) fn api_code_is_transient(code: &str) -> bool {
    matches!(code, "ERROR-500" | "ERROR-600" | "ERROR-601")
}

/// Parse a citydata response body.
///
/// Accepts the documented shape (`{"CITYDATA": {…}, "RESULT": {"RESULT.CODE":
/// …, "RESULT.MESSAGE": …}}`), the same wrapped in an array, and the city's
/// generic error bodies (`{"RESULT": {"CODE": …, "MESSAGE": …}}`, possibly
/// under a service name, or the XML `<RESULT><CODE>…</CODE>…</RESULT>`).
/// A category that is an empty array or missing means no parking data.
pub(crate) fn parse_response(body: &[u8]) -> Result<Response, ResponseError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let text = String::from_utf8_lossy(body);
            if let Some(err) = xml_result(&text) {
                return Err(err);
            }
            return Err(ResponseError::Malformed(format!("not JSON ({e})")));
        }
    };
    let elements: Vec<&serde_json::Map<String, Value>> = match &value {
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        Value::Object(obj) => vec![obj],
        _ => return Err(ResponseError::Malformed("neither a JSON object nor an array".into())),
    };
    let mut citydata = None;
    let mut result = None;
    for el in &elements {
        if citydata.is_none() {
            citydata = el.get("CITYDATA").and_then(Value::as_object);
        }
        if result.is_none() {
            result = find_result(el);
        }
    }
    let has_result = result.is_some();
    if let Some((code, message)) = result {
        if code != RESULT_OK {
            return Err(ResponseError::Api { code, message });
        }
    }
    let Some(city) = citydata else {
        return Err(ResponseError::Malformed(if has_result {
            "no CITYDATA in the response".into()
        } else {
            "no CITYDATA and no RESULT in the response".into()
        }));
    };
    let (parking, skipped) = match city.get("PRK_STTS") {
        None | Some(Value::Null) => (Vec::new(), 0),
        Some(Value::String(s)) if s.trim().is_empty() => (Vec::new(), 0),
        Some(Value::Array(items)) => {
            let objects: Vec<_> = items.iter().filter_map(Value::as_object).cloned().collect();
            let skipped = items.len() - objects.len();
            (objects, skipped)
        }
        // One entry where a converter dropped the array.
        Some(Value::Object(one)) => (vec![one.clone()], 0),
        Some(other) => {
            return Err(ResponseError::Malformed(format!(
                "CITYDATA.PRK_STTS is {}, not an array",
                json_kind(other)
            )))
        }
    };
    Ok(Response {
        area_name: city.get("AREA_NM").map(text_of).filter(|s| !s.is_empty()),
        area_code: city.get("AREA_CD").map(text_of).filter(|s| !s.is_empty()),
        parking,
        skipped,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `RESULT.CODE`/`RESULT.MESSAGE` of a `RESULT` object (or `CODE`/`MESSAGE`),
/// in `obj` or one level down (the generic error body nests it under the
/// service name).
fn find_result(obj: &serde_json::Map<String, Value>) -> Option<(String, String)> {
    let read = |r: &serde_json::Map<String, Value>| {
        let code = r.get("RESULT.CODE").or_else(|| r.get("CODE")).map(text_of)?;
        let message = r.get("RESULT.MESSAGE").or_else(|| r.get("MESSAGE")).map(text_of);
        Some((code, message.unwrap_or_default()))
    };
    if let Some(found) = obj.get("RESULT").and_then(Value::as_object).and_then(read) {
        return Some(found);
    }
    obj.values()
        .filter_map(Value::as_object)
        .filter_map(|inner| inner.get("RESULT").and_then(Value::as_object))
        .find_map(read)
}

/// The city's XML error body: `<RESULT><CODE>…</CODE><MESSAGE>…</MESSAGE></RESULT>`.
fn xml_result(text: &str) -> Option<ResponseError> {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&close)?;
        Some(text[start..start + len].trim().to_string())
    };
    let code = tag("CODE")?;
    if code.is_empty() {
        return None;
    }
    Some(ResponseError::Api {
        code,
        message: tag("MESSAGE").unwrap_or_default(),
    })
}

/// A JSON value as the feed's string: strings as they are, numbers and
/// booleans in their JSON spelling, anything else (null, missing) empty.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// One `parking_status` message: the 16 fields in [`FIELDS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LotStatus {
    pub values: [String; 16],
}

impl LotStatus {
    pub(crate) fn get(&self, field: &str) -> &str {
        FIELDS
            .iter()
            .position(|f| *f == field)
            .map_or("", |i| self.values[i].as_str())
    }

    /// The message key.
    pub(crate) fn parking_code(&self) -> &str {
        self.get("PARKING_CODE")
    }

    /// The JSON message, fields in [`FIELDS`] order, every value a string
    /// (byte for byte the simulator's format).
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, (name, value)) in FIELDS.iter().zip(&self.values).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(&mut out, name);
            out.push(b':');
            push_json_string(&mut out, value);
        }
        out.push(b'}');
        out
    }
}

/// Map one `PRK_STTS` entry of hotspot (`region`, `region_code`).
pub(crate) fn map_entry(region: &str, region_code: &str, entry: &serde_json::Map<String, Value>) -> LotStatus {
    let mut values: [String; 16] = Default::default();
    for (i, field) in FIELDS.iter().enumerate() {
        values[i] = match *field {
            "REGION" => region.to_string(),
            "REGION_CODE" => region_code.to_string(),
            _ => ENTRY_FIELDS
                .iter()
                .find(|(f, _)| f == field)
                .and_then(|(_, src)| entry.get(*src))
                .map(text_of)
                .unwrap_or_default(),
        };
    }
    LotStatus { values }
}

/// What one hotspot's response becomes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Mapped {
    /// One message per lot, in order of first appearance.
    pub lots: Vec<LotStatus>,
    /// Entries dropped because their lot was already listed.
    pub duplicates: usize,
    /// Entries without a `PRK_CD` (cannot be keyed).
    pub without_code: usize,
}

/// Map a response for `hotspot` to one message per lot.
///
/// `REGION`/`REGION_CODE` come from the response's `AREA_NM`/`AREA_CD`,
/// falling back to the hotspot list. The API lists some lots several times
/// in one hotspot (one code 43 times in the captured poll), often once with
/// real-time status and once without: each lot is published once, from the
/// entry that reports real-time status (`CUR_PRK_YN = "Y"`), else the one
/// with the newest `CUR_PRK_TIME`, else the first.
pub(crate) fn map_response(hotspot: &Hotspot, response: &Response) -> Mapped {
    let region = response.area_name.as_deref().unwrap_or(&hotspot.name);
    let region_code = response.area_code.as_deref().unwrap_or(&hotspot.code);
    let mut mapped = Mapped::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in &response.parking {
        let lot = map_entry(region, region_code, entry);
        if lot.parking_code().trim().is_empty() {
            mapped.without_code += 1;
            continue;
        }
        match index.get(lot.parking_code()) {
            Some(&i) => {
                mapped.duplicates += 1;
                if better(&lot, &mapped.lots[i]) {
                    mapped.lots[i] = lot;
                }
            }
            None => {
                index.insert(lot.parking_code().to_string(), mapped.lots.len());
                mapped.lots.push(lot);
            }
        }
    }
    mapped
}

/// Does `new` describe the lot better than `old`? Real-time status first,
/// then the newer update time ("YYYY-MM-DD HH:MM:SS" sorts as text; empty
/// is oldest); ties keep `old`.
fn better(new: &LotStatus, old: &LotStatus) -> bool {
    let realtime = |l: &LotStatus| l.get("IS_REALTIME_STATUS_PROVIDED") == "Y";
    match (realtime(new), realtime(old)) {
        (true, false) => true,
        (false, true) => false,
        _ => new.get("LAST_UPDATE") > old.get("LAST_UPDATE"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn hotspot() -> Hotspot {
        Hotspot {
            code: "POI007".into(),
            name: "홍대 관광특구".into(),
        }
    }

    fn entry(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_field_maps_from_its_own_source() {
        // A distinct value per source field: a swapped pair shows.
        let e = entry(json!({
            "PRK_NM": "nm", "PRK_CD": "cd", "PRK_TYPE": "type", "CPCTY": "cap",
            "CUR_PRK_CNT": "cnt", "CUR_PRK_TIME": "time", "CUR_PRK_YN": "yn",
            "PAY_YN": "pay", "RATES": "rates", "TIME_RATES": "trates",
            "ADD_RATES": "arates", "ADD_TIME_RATES": "atrates", "LAT": "lat", "LNG": "lng",
            "ADDRESS": "ignored", "ROAD_ADDR": "ignored"
        }));
        let lot = map_entry("region", "code", &e);
        let expected = [
            ("REGION", "region"),
            ("REGION_CODE", "code"),
            ("PARKING_NAME", "nm"),
            ("PARKING_CODE", "cd"),
            ("TYPE", "type"),
            ("CAPACITY", "cap"),
            ("OCCUPIED_SPOTS", "cnt"),
            ("LAST_UPDATE", "time"),
            ("IS_REALTIME_STATUS_PROVIDED", "yn"),
            ("PAY_YN", "pay"),
            ("BASE_RATE", "rates"),
            ("BASE_TIME", "trates"),
            ("ADD_RATE", "arates"),
            ("ADD_TIME", "atrates"),
            ("LATITUDE", "lat"),
            ("LONGITUDE", "lng"),
        ];
        assert_eq!(expected.len(), FIELDS.len());
        for (field, value) in expected {
            assert_eq!(lot.get(field), value, "{field}");
        }
        let json: Value = serde_json::from_slice(&lot.to_json()).unwrap();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), FIELDS.iter().collect::<Vec<_>>());
        assert!(obj.values().all(Value::is_string));
        assert_eq!(obj["LONGITUDE"], "lng");
    }

    #[test]
    fn missing_values_are_empty_and_numbers_become_strings() {
        let e = entry(json!({"PRK_CD": 1587410, "CPCTY": 22, "CUR_PRK_CNT": null, "LAT": 37.55639535}));
        let lot = map_entry("홍대 관광특구", "POI007", &e);
        assert_eq!(lot.parking_code(), "1587410");
        assert_eq!(lot.get("CAPACITY"), "22");
        assert_eq!(lot.get("OCCUPIED_SPOTS"), "");
        assert_eq!(lot.get("LAST_UPDATE"), "");
        assert_eq!(lot.get("LATITUDE"), "37.55639535");
        let text = String::from_utf8(lot.to_json()).unwrap();
        assert!(
            text.starts_with("{\"REGION\":\"홍대 관광특구\",\"REGION_CODE\":\"POI007\",\"PARKING_NAME\":\"\""),
            "{text}"
        );
    }

    fn body(prk: Value) -> Vec<u8> {
        serde_json::to_vec(&json!([{
            "RESULT": {"RESULT.CODE": "INFO-000", "RESULT.MESSAGE": "정상 처리되었습니다."},
            "CITYDATA": {"AREA_NM": "홍대 관광특구", "AREA_CD": "POI007", "LIVE_PPLTN_STTS": [], "PRK_STTS": prk}
        }]))
        .unwrap()
    }

    #[test]
    fn responses_in_array_or_object_shape_parse() {
        let r = parse_response(&body(json!([{"PRK_CD": "1"}, {"PRK_CD": "2"}, "junk"]))).unwrap();
        assert_eq!(r.parking.len(), 2);
        assert_eq!(r.skipped, 1);
        assert_eq!(r.area_name.as_deref(), Some("홍대 관광특구"));
        assert_eq!(r.area_code.as_deref(), Some("POI007"));
        let object = json!({
            "CITYDATA": {"AREA_NM": "a", "AREA_CD": "POI001", "PRK_STTS": [{"PRK_CD": "1"}]},
            "RESULT": {"RESULT.CODE": "INFO-000", "RESULT.MESSAGE": "ok"}
        });
        let r = parse_response(&serde_json::to_vec(&object).unwrap()).unwrap();
        assert_eq!(r.parking.len(), 1);
    }

    #[test]
    fn no_parking_data_is_an_empty_response_not_an_error() {
        for prk in [json!([]), json!(""), Value::Null] {
            let r = parse_response(&body(prk.clone())).unwrap();
            assert!(r.parking.is_empty(), "{prk}");
        }
        let none =
            json!({"CITYDATA": {"AREA_NM": "고척돔", "AREA_CD": "POI086"}, "RESULT": {"RESULT.CODE": "INFO-000"}});
        let r = parse_response(&serde_json::to_vec(&none).unwrap()).unwrap();
        assert!(r.parking.is_empty());
        let mapped = map_response(&hotspot(), &r);
        assert!(mapped.lots.is_empty());
    }

    #[test]
    fn api_error_results_are_recognised_in_every_shape() {
        let shapes = [
            json!([{"RESULT": {"RESULT.CODE": "INFO-100", "RESULT.MESSAGE": "인증키가 유효하지 않습니다."}}]),
            json!({"RESULT": {"CODE": "INFO-100", "MESSAGE": "인증키가 유효하지 않습니다."}}),
            json!({"citydata": {"RESULT": {"CODE": "INFO-100", "MESSAGE": "인증키가 유효하지 않습니다."}}}),
        ];
        for shape in shapes {
            let err = parse_response(&serde_json::to_vec(&shape).unwrap()).unwrap_err();
            assert_eq!(
                err,
                ResponseError::Api {
                    code: "INFO-100".into(),
                    message: "인증키가 유효하지 않습니다.".into()
                },
                "{shape}"
            );
            assert!(err.to_string().contains("not valid"), "{err}");
        }
        let xml = "<RESULT><CODE>ERROR-337</CODE><MESSAGE>일별 트래픽 제한을 넘은 호출입니다.</MESSAGE></RESULT>";
        let err = parse_response(xml.as_bytes()).unwrap_err();
        assert!(matches!(&err, ResponseError::Api { code, .. } if code == "ERROR-337"));
        assert!(err.to_string().contains("quota"), "{err}");
        assert!(api_code_is_transient("ERROR-500"));
        assert!(!api_code_is_transient("INFO-100"));
        assert_eq!(api_code_label("ERROR-337"), "ERROR-337");
        assert_eq!(api_code_label("anything else"), "other");
    }

    #[test]
    fn malformed_bodies_are_reported_as_such() {
        let full = body(json!([{"PRK_CD": "1"}]));
        let cases: Vec<Vec<u8>> = vec![
            full[..full.len() / 2].to_vec(),
            b"upstream request timeout".to_vec(),
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            b"42".to_vec(),
            serde_json::to_vec(&json!({"something": "else"})).unwrap(),
            serde_json::to_vec(&json!({"CITYDATA": {"PRK_STTS": 7}})).unwrap(),
            Vec::new(),
        ];
        for case in cases {
            let err = parse_response(&case).unwrap_err();
            assert!(
                matches!(err, ResponseError::Malformed(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }

    #[test]
    fn a_lot_listed_twice_is_published_once_preferring_realtime_then_newest() {
        let r = parse_response(&body(json!([
            {"PRK_CD": "A", "CUR_PRK_YN": "N", "CPCTY": "20", "LAT": "1"},
            {"PRK_CD": "B", "CUR_PRK_YN": "N", "CUR_PRK_TIME": ""},
            {"PRK_CD": "A", "CUR_PRK_YN": "Y", "CUR_PRK_CNT": "13", "CUR_PRK_TIME": "2025-03-20 14:26:41"},
            {"PRK_CD": "A", "CUR_PRK_YN": "N", "CPCTY": "21"},
            {"PRK_CD": "B", "CUR_PRK_YN": "N", "CUR_PRK_TIME": "2025-03-20 10:00:00", "CPCTY": "5"},
            {"PRK_CD": "B", "CUR_PRK_YN": "N", "CUR_PRK_TIME": "2025-03-20 10:00:00", "CPCTY": "6"},
            {"PRK_CD": "C", "CUR_PRK_YN": "Y", "CUR_PRK_TIME": "2025-03-20 09:00:00", "CUR_PRK_CNT": "1"},
            {"PRK_CD": "C", "CUR_PRK_YN": "Y", "CUR_PRK_TIME": "2025-03-20 08:00:00", "CUR_PRK_CNT": "2"},
            {"PRK_CD": "", "PRK_NM": "no code"},
        ])))
        .unwrap();
        let m = map_response(&hotspot(), &r);
        let codes: Vec<_> = m.lots.iter().map(LotStatus::parking_code).collect();
        assert_eq!(codes, ["A", "B", "C"]);
        assert_eq!(m.duplicates, 5);
        assert_eq!(m.without_code, 1);
        assert_eq!(m.lots[0].get("OCCUPIED_SPOTS"), "13");
        assert_eq!(m.lots[0].get("IS_REALTIME_STATUS_PROVIDED"), "Y");
        assert_eq!(m.lots[1].get("CAPACITY"), "5");
        assert_eq!(m.lots[2].get("OCCUPIED_SPOTS"), "1");
    }

    #[test]
    fn region_falls_back_to_the_hotspot_list() {
        let r = parse_response(&serde_json::to_vec(&json!({"CITYDATA": {"PRK_STTS": [{"PRK_CD": "1"}]}})).unwrap())
            .unwrap();
        let m = map_response(&hotspot(), &r);
        assert_eq!(m.lots[0].get("REGION"), "홍대 관광특구");
        assert_eq!(m.lots[0].get("REGION_CODE"), "POI007");
    }

    #[test]
    fn urls_encode_their_segments_and_logs_never_see_the_key() {
        let key = ApiKey::new("4c65 5649/42");
        let url = request_url("http://127.0.0.1:8088/", &key, "홍대 관광특구");
        assert_eq!(
            url,
            "http://127.0.0.1:8088/4c65%205649%2F42/json/citydata/1/5/%ED%99%8D%EB%8C%80%20%EA%B4%80%EA%B4%91%ED%8A%B9%EA%B5%AC"
        );
        assert_eq!(
            request_url("http://h:1", &ApiKey::new("k"), "POI001"),
            "http://h:1/k/json/citydata/1/5/POI001"
        );
        assert_eq!(
            display_url("http://h:1", "POI001"),
            "http://h:1/***/json/citydata/1/5/POI001"
        );
        assert_eq!(format!("{key} {key:?}"), "*** ApiKey(***)");
        assert_eq!(
            key.redact("GET http://h/4c65%205649%2F42/json and 4c65 5649/42"),
            "GET http://h/***/json and ***"
        );
    }

    #[test]
    fn hotspot_lists_are_checked() {
        let all = default_hotspots().unwrap();
        assert_eq!(all.len(), 30);
        assert_eq!(all[6].code, "POI007");
        assert_eq!(all[6].name, "홍대 관광특구");
        assert!(parse_hotspots("f", "[]").unwrap_err().to_string().contains("empty"));
        assert!(parse_hotspots("f", r#"[{"code":"POI001"},{"code":"POI001"}]"#)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(parse_hotspots("f", r#"{"code":"POI001"}"#).is_err());
        assert_eq!(parse_hotspots("f", r#"[{"code":"POI001"}]"#).unwrap()[0].name, "");
    }
}
