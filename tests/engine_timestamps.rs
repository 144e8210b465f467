//! A device with a wrong clock, against the real broker: the parking
//! topology reading its event time from `LAST_UPDATE`, with one record dated
//! 2099 in the middle of the feed. Without `max_future` it moves its task's
//! stream time to 2099 and its repartition record carries a timestamp a
//! Kafka 4 broker refuses: every transaction aborts until weir gives up.
//! With it, the record goes to the dead-letter topic and the hourly results
//! are exactly those computed from the rest of the input.

mod common;
mod engine_common;

use std::time::Duration;

use common::*;
use engine_common::*;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::Value;

/// The event time a record's `LAST_UPDATE` gives, if it has a readable one.
fn last_update_ms(payload: &[u8]) -> Option<i64> {
    use chrono::TimeZone;
    let v: Value = serde_json::from_slice(payload).ok()?;
    let text = v.get("LAST_UPDATE")?.as_str()?;
    let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()?;
    Some(
        chrono_tz::Asia::Seoul
            .from_local_datetime(&naive)
            .single()?
            .timestamp_millis(),
    )
}

/// A topic config as the broker reports it.
fn topic_config(topic: &str, name: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource.get(name).and_then(|e| e.value.clone())
}

#[test]
fn a_record_dated_2099_is_dead_lettered_and_the_hourly_results_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let id = unique("it-future");
    let (topo, [status, dlq, hourly, lots]) = topology_eos(dir.path(), &id);
    let text = std::fs::read_to_string(&topo).unwrap();
    assert!(text.contains("event_time: kafka"), "{text}");
    std::fs::write(
        &topo,
        text.replace(
            "event_time: kafka",
            r#"event_time: { field: LAST_UPDATE, format: "%Y-%m-%d %H:%M:%S", time_zone: Asia/Seoul }"#,
        ),
    )
    .unwrap();
    create_topic(&status, 3);
    let mut inputs = simulate(2000, 5, dir.path());

    // The poison: a real-time record of the feed's middle, its LAST_UPDATE
    // moved to 2099 (its Kafka timestamp stays: the device's clock is
    // wrong, the producer's is not).
    let at = inputs.len() / 2
        + inputs[inputs.len() / 2..]
            .iter()
            .position(|i| {
                last_update_ms(&i.payload) == Some(i.timestamp)
                    && String::from_utf8_lossy(&i.payload).contains(r#""IS_REALTIME_STATUS_PROVIDED":"Y""#)
            })
            .unwrap();
    let mut poison: Value = serde_json::from_slice(&inputs[at].payload).unwrap();
    poison["LAST_UPDATE"] = "2099-01-01 00:00:00".into();
    let poison = Input {
        partition: inputs[at].partition,
        timestamp: inputs[at].timestamp,
        key: inputs[at].key.clone(),
        payload: poison.to_string().into_bytes(),
    };
    let poison_key = poison.key.clone();
    inputs.insert(at + 1, poison);

    // Expected from the records whose event time is their LAST_UPDATE (the
    // others, the poison included, are dead-lettered).
    let counted: Vec<Input> = inputs
        .iter()
        .filter(|i| last_update_ms(&i.payload) == Some(i.timestamp))
        .cloned()
        .collect();
    let want = expected(&counted);
    assert!(want.len() > 5, "{} region-hours", want.len());

    produce_inputs(&status, &inputs);
    let state = dir.path().join("state");
    let run = WeirProc::spawn(
        &["run", topo.to_str().unwrap(), "--state-dir", state.to_str().unwrap()],
        &state.with_extension("log"),
    );
    let results = close_windows_and_collect(&id, &status, &hourly, &inputs, want.len());
    run.terminate();
    check_results(&results, &want);

    let dead = consume_until(&dlq, Duration::from_secs(30), Duration::from_secs(1), |r| {
        r.iter().any(|d| d.headers["weir.error"].contains("max_future"))
    });
    let future: Vec<&Rec> = dead
        .iter()
        .filter(|d| d.headers["weir.error"].contains("max_future"))
        .collect();
    assert_eq!(future.len(), 1, "{future:#?}");
    assert_eq!(future[0].key.as_deref(), poison_key.as_deref().map(str::as_bytes));
    // 2099-01-01 00:00 KST, in UTC.
    assert!(
        future[0].headers["weir.error"].contains("LAST_UPDATE is 2098-12-31T15:00:00+00:00, more than max_future (1h)"),
        "{:?}",
        future[0].headers
    );
    // Stamped by the broker's clock, whatever the host's says.
    for topic in [dlq.clone(), format!("{id}-hourly-by-region-changelog")] {
        assert_eq!(
            topic_config(&topic, "message.timestamp.type").as_deref(),
            Some("LogAppendTime"),
            "{topic}"
        );
    }
    delete_topics(&[&status, &dlq, &hourly, &lots, &hotspots_topic(&id)]);
}
