//! Compiling a `window` step: group key (with a repartition when it is not
//! the record key), window size and alignment, grace, emit strategy and
//! aggregates.

use serde_saphyr::Spanned;

use super::super::*;
use super::{millis, parse_tz, Compiler};

impl Compiler {
    pub(super) fn window(
        &mut self,
        w: &spec::WindowSpec,
        name: &str,
        at: &Spanned<String>,
        input: NodeId,
    ) -> Option<NodeId> {
        if w.group_by.is_empty() {
            self.errors
                .push(Diagnostic::at(at, format!("window `{name}` has no key")).with_hint(
                    "add `group_by: {name: expression}`, e.g. `group_by: {region_code: value.REGION_CODE}`",
                ));
        }
        let (size, advance) = match (&w.tumbling, &w.hopping) {
            (Some(t), None) => {
                let s = self.duration(t)?;
                (s, s)
            }
            (None, Some(h)) => {
                let (s, a) = (self.duration(&h.size)?, self.duration(&h.advance)?);
                // Windows are aligned in whole milliseconds: a shorter
                // advance would be 0 ms.
                if a.as_millis() == 0 || a > s {
                    self.errors
                        .push(Diagnostic::at(&h.advance, "hopping advance must be ≥ 1ms and ≤ size"));
                    return None;
                }
                // As `window_starts` counts them: every start `advance`
                // apart within `size` before the record.
                let per_record = s.as_millis().div_ceil(a.as_millis());
                if per_record > u128::from(MAX_WINDOWS_PER_RECORD) {
                    self.errors.push(
                        Diagnostic::at(
                            &h.advance,
                            format!(
                                "hopping window of {} advancing by {} puts every record in {per_record} windows; the limit is {MAX_WINDOWS_PER_RECORD}",
                                h.size.value.trim(),
                                h.advance.value.trim()
                            ),
                        )
                        .with_hint(format!(
                            "each window is a state read and write per record: make `advance` at least {} or `size` smaller",
                            humantime::format_duration(Duration::from_millis(
                                u64::try_from(s.as_millis().div_ceil(u128::from(MAX_WINDOWS_PER_RECORD)))
                                    .unwrap_or(u64::MAX)
                            ))
                        )),
                    );
                    return None;
                }
                (s, a)
            }
            _ => {
                self.errors.push(Diagnostic::at(
                    at,
                    format!("window `{name}` needs exactly one of `tumbling` or `hopping`"),
                ));
                return None;
            }
        };
        if size.as_millis() == 0 {
            self.errors.push(Diagnostic::at(at, "window size must be > 0"));
            return None;
        }
        let grace = match &w.grace {
            Some(g) => self.duration(g)?,
            None => Duration::ZERO,
        };
        let offset_ms = match &w.time_zone {
            Some(z) => {
                let tz = parse_tz(z).map_err(|d| self.errors.push(d)).unwrap_or(Tz::UTC);
                use chrono::Offset;
                use chrono::TimeZone;
                // Align to local midnight: shift boundaries by the zone's
                // (fixed) offset. Zones with DST move by an hour twice a
                // year; the offset at the epoch is used, as Spark does.
                let off = tz
                    .offset_from_utc_datetime(&chrono::DateTime::UNIX_EPOCH.naive_utc())
                    .fix();
                -i64::from(off.local_minus_utc()) * 1000
            }
            None => 0,
        };
        let close_idle_after = match &w.close_idle_after {
            Some(d) => Some(self.duration(d)?),
            None => None,
        };
        let aggregates = self.aggregates(&w.aggregate);
        if w.aggregate.is_empty() {
            self.errors.push(
                Diagnostic::at(at, format!("window `{name}` has no aggregates"))
                    .with_hint("add e.g. `aggregate: {samples: count()}`"),
            );
        }
        let mut group = Vec::new();
        for src in w.group_by.values() {
            group.push(self.expr(src)?);
        }
        let group_is_record_key = group.len() == 1 && group[0].is_record_key();
        let parent = if group_is_record_key {
            input
        } else {
            // Ship only the fields the aggregates read, when they are plain
            // `value.FIELD`s: the repartition topic then carries a fraction
            // of each record.
            let fields: Option<Vec<String>> = aggregates
                .iter()
                .filter_map(|a| a.arg.as_ref())
                .map(|e| e.field_name().map(str::to_string))
                .collect();
            self.repartition(name, ToTopicKey::Group(group), fields, input)
        };
        let store = self.stores.len();
        let size_ms = millis(size);
        let grace_ms = millis(grace);
        let node = self.add(
            name.to_string(),
            NodeKind::Window(WindowNode {
                group_names: w.group_by.keys().cloned().collect(),
                group_is_record_key,
                size_ms,
                advance_ms: millis(advance),
                grace_ms,
                offset_ms,
                close_idle_after,
                emit: w.emit,
                late: w.late,
                aggregates,
                store,
            }),
            Some(parent),
        );
        let retention_ms = size_ms.saturating_add(grace_ms).saturating_add(86_400_000);
        self.add_store(name, StoreKind::Window, node, Some(retention_ms));
        Some(node)
    }

    /// The `aggregate:` map of a window or table_aggregate: each output
    /// name with its kind and compiled argument.
    pub(super) fn aggregates(&mut self, specs: &indexmap::IndexMap<String, spec::Str>) -> Vec<Aggregate> {
        let mut aggregates = Vec::new();
        for (out, src) in specs {
            match parse_aggregate(&src.value) {
                Ok((kind, arg)) => {
                    let arg = match arg {
                        Some(a) => match Expr::compile(&a) {
                            Ok(e) => Some(e),
                            Err(msg) => {
                                self.errors
                                    .push(Diagnostic::at(src, format!("aggregate `{out}`: {msg}")));
                                continue;
                            }
                        },
                        None => None,
                    };
                    aggregates.push(Aggregate {
                        name: out.clone(),
                        kind,
                        arg,
                    });
                }
                Err(msg) => self.errors.push(
                    Diagnostic::at(src, format!("aggregate `{out}`: {msg}"))
                        .with_hint("use count(), sum(x), avg(x), min(x), max(x), first(x) or last(x)"),
                ),
            }
        }
        aggregates
    }
}

/// `avg(available)` → (Avg, Some("value.available")). A bare identifier
/// names a field of the value.
fn parse_aggregate(src: &str) -> Result<(AggKind, Option<String>), String> {
    let src = src.trim();
    let (func, rest) = src
        .split_once('(')
        .ok_or_else(|| format!("{src:?} is not an aggregate call"))?;
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("{src:?}: missing ')'"))?
        .trim();
    let kind = match func.trim() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "avg" => AggKind::Avg,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "first" => AggKind::First,
        "last" => AggKind::Last,
        other => {
            let names = ["count", "sum", "avg", "min", "max", "first", "last"];
            let hint = crate::support::did_you_mean(other, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!("unknown aggregate `{other}`{hint}"));
        }
    };
    if inner.is_empty() {
        return match kind {
            AggKind::Count => Ok((kind, None)),
            _ => Err(format!("{}() needs an argument", func.trim())),
        };
    }
    let bare = inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !functions::VARIABLES.contains(&inner)
        && !inner.chars().next().is_some_and(|c| c.is_ascii_digit());
    Ok((
        kind,
        Some(if bare {
            format!("value.{inner}")
        } else {
            inner.to_string()
        }),
    ))
}
