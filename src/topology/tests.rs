//! Tests of loading, validation and describe.

use super::*;

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match Topology::parse(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e,
    }
}

const BASE: &str = "application_id: app\nsources:\n  s:\n    topic: in\nsteps:\n";

#[test]
fn parking_topology_compiles_with_a_repartition_for_the_region_window() {
    let t = Topology::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml"))).unwrap();
    assert_eq!(t.application_id, "parking-hourly");
    assert_eq!(t.subtopologies.len(), 3);
    assert_eq!(
        t.subtopologies[1].source_topics,
        vec!["parking-hourly-hourly-by-region-repartition"]
    );
    assert_eq!(
        t.subtopologies[2].source_topics,
        vec!["parking-hourly-free-now-by-region-repartition"]
    );
    assert_eq!(t.stores.len(), 3);
    assert_eq!(
        t.stores[0].changelog,
        "parking-hourly-latest-per-lot-changelog".replace("latest-per-lot", &t.stores[0].name)
    );
    assert!(t
        .stores
        .iter()
        .any(|s| s.changelog == "parking-hourly-hourly-by-region-changelog" && s.kind == StoreKind::Window));
}

#[test]
fn internal_topics_are_the_changelogs_and_repartition_topics_not_outputs() {
    let t = Topology::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml"))).unwrap();
    let mut internal = t.internal_topics();
    internal.sort();
    assert_eq!(
        internal,
        [
            "parking-hourly-free-now-by-region-changelog",
            "parking-hourly-free-now-by-region-repartition",
            "parking-hourly-hourly-by-region-changelog",
            "parking-hourly-hourly-by-region-repartition",
            "parking-hourly-latest-per-lot-changelog",
        ]
    );
    assert_eq!(t.external_source_topics(), ["parking_status"]);
}

#[test]
fn describe_text_matches_kafka_streams_format() {
    let t = Topology::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml"))).unwrap();
    let golden = include_str!("../../tests/golden/parking.describe.txt");
    assert_eq!(describe::text(&t), golden);
}

#[test]
fn describe_mermaid_shows_topics_stores_and_subtopologies() {
    let t = Topology::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/topology/parking.yaml"))).unwrap();
    let m = describe::mermaid(&t);
    assert!(m.starts_with("flowchart LR\n"));
    for needle in [
        "subgraph sub0[\"Sub-topology 0\"]",
        "subgraph sub1[\"Sub-topology 1\"]",
        "t_parking_status([\"parking_status\"])",
        "t_parking_status --> parking",
        "available --> hourly_by_region_repartition_sink",
        "hourly_by_region_repartition_sink --> t_parking_hourly_hourly_by_region_repartition",
        "t_parking_hourly_hourly_by_region_repartition --> hourly_by_region_repartition_source",
        "s_hourly_by_region[(\"store: hourly-by-region\")]",
        "hourly_by_region_to --> t_parking_hourly_avg",
        "latest_per_lot_to --> t_parking_lot_status",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
}

#[test]
fn unknown_field_has_position_and_suggestion() {
    let e = errors(&format!("{BASE}  - name: w\n    window:\n      group_by: {{ g: key }}\n      tumbling: 1h\n      grase: 1m\n      aggregate: {{ n: count() }}\n"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 10, "{e:?}");
    assert!(e[0].message.contains("grase"), "{e:?}");
    assert_eq!(e[0].hint.as_deref(), Some("did you mean `grace`?"));
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let yaml = format!(
        "{BASE}  - name: f\n    filter: nmu(value.A) > 1\n  - name: w\n    window:\n      group_by: {{}}\n      tumbling: 1 hour-ish\n      aggregate: {{ n: cnt() }}\n  - name: o\n    from: ff\n    to: {{ topic: in }}\n"
    );
    let e = errors(&yaml);
    let text: Vec<String> = e
        .iter()
        .map(|d| format!("{}:{} {} {:?}", d.line, d.column, d.message, d.hint))
        .collect();
    let all = text.join("\n");
    assert!(
        all.contains("7:") && all.contains("unknown function `nmu`") && all.contains("did you mean `num`"),
        "{all}"
    );
    assert!(all.contains("bad duration"), "{all}");
    assert!(
        all.contains("unknown step or source `ff`") && all.contains("did you mean `f`"),
        "{all}"
    );
    assert!(
        e.iter().any(|d| d.line == 11 && d.message.contains("bad duration")),
        "{all}"
    );
}

#[test]
fn window_without_key_and_sink_on_source_are_rejected() {
    let e = errors(&format!("{BASE}  - name: w\n    window:\n      group_by: {{}}\n      tumbling: 1h\n      aggregate: {{ n: count() }}\n    to: {{ topic: in }}\n"));
    let all = format!("{e:?}");
    assert!(all.contains("has no key"), "{all}");
    assert!(all.contains("output topic `in` is also a source topic"), "{all}");
}

#[test]
fn cycles_and_forward_references_are_rejected() {
    let e = errors(&format!(
        "{BASE}  - name: a\n    from: b\n    filter: 'true'\n  - name: b\n    filter: 'true'\n"
    ));
    assert!(e[0].message.contains("not defined before it"), "{e:?}");
    assert_eq!(e[0].line, 7);
    let e = errors(&format!("{BASE}  - name: a\n    from: a\n    filter: 'true'\n"));
    assert!(e[0].message.contains("not defined before it"), "{e:?}");
}

#[test]
fn bad_time_zone_and_unknown_aggregate_get_hints() {
    let e = errors(&format!("{BASE}  - name: w\n    window:\n      group_by: {{ g: value.g }}\n      tumbling: 1h\n      time_zone: Asia/Seol\n      aggregate: {{ n: avrage(x) }}\n"));
    let all = format!("{e:?}");
    assert!(all.contains("Asia/Seoul"), "{all}");
    assert!(all.contains("did you mean `avg`"), "{all}");
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let e = errors("application_id: app\nsources: [\n");
    assert!(e[0].line >= 2, "{e:?}");
}

#[test]
fn steps_name_internal_topics_and_group_by_key_skips_repartition() {
    let t = Topology::parse(&format!("{BASE}  - name: w\n    window:\n      group_by: {{ g: key }}\n      tumbling: 1h\n      aggregate: {{ n: count() }}\n")).unwrap();
    assert_eq!(t.subtopologies.len(), 1);
    let t = Topology::parse(&format!("{BASE}  - name: w\n    window:\n      group_by: {{ g: value.x }}\n      tumbling: 1h\n      aggregate: {{ n: count() }}\n")).unwrap();
    assert_eq!(t.subtopologies.len(), 2);
    assert_eq!(
        t.source_topics(),
        vec!["in".to_string(), "app-w-repartition".to_string()]
    );
}

#[test]
fn schema_is_derived_from_the_types() {
    let schema = serde_json::to_value(schemars::schema_for!(spec::TopologySpec)).unwrap();
    let props = &schema["properties"];
    for field in [
        "application_id",
        "processing_guarantee",
        "commit_interval",
        "dead_letter",
        "sources",
        "steps",
    ] {
        assert!(props.get(field).is_some(), "schema lacks {field}: {schema}");
    }
    assert!(schema.to_string().contains("close_idle_after"));
}

fn window_step(window: &str) -> String {
    format!("{BASE}  - name: w\n    window:\n      group_by: {{ g: key }}\n{window}      aggregate: {{ n: count() }}\n")
}

/// `size: 1d, advance: 1ms` would put every record in 86,400,000 windows.
#[test]
fn hopping_windows_with_more_than_ten_thousand_windows_per_record_are_rejected() {
    let e = errors(&window_step("      hopping: { size: 1d, advance: 1ms }\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 9, "the advance's line: {e:?}");
    assert!(
        e[0].message.contains(
            "hopping window of 1d advancing by 1ms puts every record in 86400000 windows; the limit is 10000"
        ),
        "{e:?}"
    );
    assert!(e[0].hint.as_deref().unwrap().contains("at least 8s 640ms"), "{e:?}");
    // 10,000 exactly is allowed; a window count rounds up.
    assert!(Topology::parse(&window_step("      hopping: { size: 10s, advance: 1ms }\n")).is_ok());
    let e = errors(&window_step("      hopping: { size: 10001ms, advance: 1ms }\n"));
    assert!(e[0].message.contains("10001 windows"), "{e:?}");
    let e = errors(&window_step("      hopping: { size: 20001ms, advance: 2ms }\n"));
    assert!(e[0].message.contains("10001 windows"), "{e:?}");
    // Below a millisecond the advance would be 0 ms.
    let e = errors(&window_step("      hopping: { size: 1h, advance: 500us }\n"));
    assert!(e[0].message.contains("≥ 1ms"), "{e:?}");
}

#[test]
fn max_future_is_a_duration_with_a_default_of_an_hour() {
    let src = |event_time: &str| {
        format!("application_id: app\nsources:\n  s:\n    topic: in\n    event_time: {event_time}\nsteps:\n  - name: f\n    filter: 'true'\n")
    };
    let max_future = |t: &Topology| match &t.nodes[0].kind {
        NodeKind::Source(SourceNode {
            event_time: EventTime::Field { max_future_ms, .. },
            ..
        }) => *max_future_ms,
        other => panic!("{other:?}"),
    };
    let t = Topology::parse(&src("{ field: at }")).unwrap();
    assert_eq!(max_future(&t), 3_600_000);
    let t = Topology::parse(&src("{ field: at, max_future: 5m }")).unwrap();
    assert_eq!(max_future(&t), 300_000);
    let e = errors(&src("{ field: at, max_future: soon }"));
    assert_eq!((e.len(), e[0].line), (1, 5), "{e:?}");
    assert!(e[0].message.contains("bad duration \"soon\""), "{e:?}");
    let e = errors(&src("kafka\n    max_future: 1h"));
    assert!(e[0].message.contains("max_future"), "only with a field: {e:?}");
    // The event time block keeps its positions (the time zone's error was
    // at line 0 while serde buffered the block).
    let e = errors(&src("{ field: at, time_zone: Asia/Seol }"));
    assert_eq!(e[0].line, 5, "{e:?}");
    assert!(Topology::parse(&src("kafka")).is_ok());
    assert!(errors(&src("kafk"))[0].message.contains("kafka"));
}

#[test]
fn an_exactly_once_commit_interval_must_fit_in_the_transaction_timeout() {
    let src = |guarantee: &str, interval: &str| {
        format!(
            "application_id: app\nprocessing_guarantee: {guarantee}\ncommit_interval: {interval}\nsources:\n  s:\n    topic: in\nsteps:\n  - name: f\n    filter: 'true'\n"
        )
    };
    let e = errors(&src("exactly_once", "20s"));
    assert_eq!((e.len(), e[0].line), (1, 3), "{e:?}");
    assert!(
        e[0].message
            .contains("commit_interval 20s is too long for exactly_once"),
        "{e:?}"
    );
    assert!(e[0].hint.as_deref().unwrap_or("").contains("at most 5s"), "{e:?}");
    assert!(Topology::parse(&src("exactly_once", "5s")).is_ok());
    assert!(Topology::parse(&src("at_least_once", "20s")).is_ok());
}
