"""The parking job in Quix Streams, for benches/broker/run.sh.

    quix_app.py BOOTSTRAP GROUP INPUT HOURLY LOTS GUARANTEE GRACE_SECONDS COMMIT_INTERVAL_S STATE_DIR

Same steps as topology/parking.yaml (without free-now-by-region and the hotspot join): keep IS_REALTIME_STATUS_PROVIDED == "Y",
AVAILABLE_SPOTS = max(CAPACITY - OCCUPIED_SPOTS, 0) (missing or empty = 0),
repartition by (REGION_CODE, REGION) (group_by), 1 h tumbling windows with the
given grace, final results only (.final(), closed per partition), written as
weir's hourly record; latest status per lot (newest LAST_UPDATE wins) in a
stateful step to LOTS. GUARANTEE: at-least-once or exactly-once. Runs until
SIGTERM. Event time: the Kafka record timestamp (Quix's default).
"""

import sys
from datetime import datetime, timedelta, timezone

from quixstreams import Application

SEOUL = timezone(timedelta(hours=9))
SEP = "\x1f"


def num(v, field):
    f = v.get(field)
    if f is None:
        return 0.0
    if isinstance(f, (int, float)):
        return float(f)
    s = str(f).strip()
    return float(s) if s else 0.0


def rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, SEOUL).isoformat()


def main():
    (bootstrap, group, input_topic, hourly_topic, lots_topic, guarantee, grace_s, commit_s, state_dir) = sys.argv[1:10]
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        commit_interval=float(commit_s),
        state_dir=state_dir,
        auto_create_topics=True,
        loglevel="WARNING",
    )
    src = app.topic(input_topic, key_deserializer="str", value_deserializer="json")
    hourly = app.topic(hourly_topic, key_serializer="str", value_serializer="json")
    lots = app.topic(lots_topic, key_serializer="str", value_serializer="json")

    sdf = app.dataframe(src)
    sdf = sdf.filter(lambda v: v.get("IS_REALTIME_STATUS_PROVIDED") == "Y")

    def available(v):
        v["AVAILABLE_SPOTS"] = int(max(num(v, "CAPACITY") - num(v, "OCCUPIED_SPOTS"), 0))
        return v

    sdf = sdf.apply(available)

    # Branch 2: latest status per lot (stateful, keyed by the input key = PARKING_CODE).
    def latest(v, state):
        old = state.get("v")
        if old is None or v.get("LAST_UPDATE", "") >= old.get("LAST_UPDATE", ""):
            state.set("v", v)
            return v
        return old

    sdf.apply(latest, stateful=True).to_topic(lots)

    # Branch 1: hourly average per region.
    by_region = sdf.group_by(lambda v: v.get("REGION_CODE", "") + SEP + v.get("REGION", ""), name="hourly-by-region")
    win = by_region.tumbling_window(duration_ms=3_600_000, grace_ms=int(grace_s) * 1000)
    try:
        win = win.reduce(
            reducer=lambda a, v: [a[0] + v["AVAILABLE_SPOTS"], a[1] + 1],
            initializer=lambda v: [v["AVAILABLE_SPOTS"], 1],
        ).final(closing_strategy="partition")
    except TypeError:  # older Quix: no closing_strategy
        win = win.reduce(
            reducer=lambda a, v: [a[0] + v["AVAILABLE_SPOTS"], a[1] + 1],
            initializer=lambda v: [v["AVAILABLE_SPOTS"], 1],
        ).final()

    def result(w, key, ts, headers):
        g = key.decode() if isinstance(key, bytes) else key
        code, region = g.split(SEP, 1)
        s, c = w["value"]
        start = rfc3339(w["start"])
        out = {
            "region_code": code,
            "region": region,
            "window_start": start,
            "window_end": rfc3339(w["end"]),
            "avg_available_spots": s / c if c else 0.0,
            "samples": c,
        }
        return out

    win = win.apply(result, metadata=True)
    win.to_topic(hourly, key=lambda v: v["region_code"] + "@" + v["window_start"])
    app.run()


if __name__ == "__main__":
    main()
