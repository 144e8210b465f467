"""Query load for benches/query/run.sh: point lookups against `weir run
--query-addr` instances at a fixed rate, and the wait for a job to catch up.

  load.py queries SECONDS RATE WARMUP ADDR...   lookups of lots and regions, round robin over ADDRs
  load.py caught-up RECORDS TOPIC TIMEOUT METRICS_ADDR...

`queries` picks its keys from the stores themselves (a scan of the lot and
region stores through the first address), then sends RATE lookups per
second (open loop: a request late by more than a second is skipped, not
queued) on one keep-alive connection per address, for SECONDS after WARMUP
seconds, and prints one line per kind of answer:

  result local|forwarded N p50_ms p90_ms p99_ms max_ms
  status lot|region CODE N

(A region's row leaves the store when its last lot moves to another region
or expires: a region picked at the start may answer 404 later.)

"local" answers came from the instance asked (`served_by`), "forwarded"
ones from another instance through it. Latency is measured in this client:
the request sent to the answer read, Python's own cost included (the same
for both kinds).

`caught-up` polls each instance's /metrics every 100 ms until the consumer
lag of every partition of TOPIC is 0 on every instance that reports it,
every partition is reported, and the instances consumed at least RECORDS
records in all; prints `caught_up SECONDS` (from the start of the poll) or
exits 1 after TIMEOUT seconds.
"""

import http.client
import json
import random
import re
import sys
import time
import urllib.parse
import urllib.request


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Conn:
    def __init__(self, addr):
        self.addr = addr
        self.c = None

    def get(self, path):
        for attempt in range(2):
            try:
                if self.c is None:
                    host, port = self.addr.rsplit(":", 1)
                    self.c = http.client.HTTPConnection(host, int(port), timeout=10)
                self.c.request("GET", path)
                r = self.c.getresponse()
                body = r.read()
                return r.status, body
            except (http.client.HTTPException, OSError):
                # The server ends a connection after 30 s: reconnect once.
                self.c = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def keys(addr):
    c = Conn(addr)
    status, body = c.get("/v1/stores/latest-per-lot/keys?limit=100000")
    lots = [r["key"] for r in json.loads(body)["rows"]] if status == 200 else []
    status, body = c.get("/v1/stores/free-now-by-region/keys?limit=100000")
    regions = [r["key"] for r in json.loads(body)["rows"]] if status == 200 else []
    return lots, regions


def queries(seconds, rate, warmup, addrs):
    deadline = time.time() + 120
    lots, regions = [], []
    while time.time() < deadline and not (lots and regions):
        try:
            lots, regions = keys(addrs[0])
        except (OSError, ValueError, KeyError):
            pass
        if not (lots and regions):
            time.sleep(1)
    if not (lots and regions):
        sys.exit("no keys from the stores in 120 s")
    print(f"keys {len(lots)} lots {len(regions)} regions", flush=True)
    conns = [Conn(a) for a in addrs]
    rnd = random.Random(7)
    lat = {"local": [], "forwarded": []}
    statuses = {}
    interval = 1.0 / rate
    start = time.time()
    measure_from = start + warmup
    end = measure_from + seconds
    n = 0
    skipped = 0
    while True:
        due = start + n * interval
        now = time.time()
        if due >= end:
            break
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:
            # Open loop: a request more than a second late is dropped.
            skipped += 1
            n += 1
            continue
        conn = rnd.choice(conns)
        if n % 4 == 0:
            what = "region"
            path = "/v1/stores/free-now-by-region/keys/" + urllib.parse.quote(rnd.choice(regions), safe="")
        else:
            what = "lot"
            path = "/v1/stores/latest-per-lot/keys/" + urllib.parse.quote(rnd.choice(lots), safe="")
        t0 = time.perf_counter()
        status, body = conn.get(path)
        ms = (time.perf_counter() - t0) * 1000
        n += 1
        if time.time() < measure_from:
            continue
        statuses[(what, status)] = statuses.get((what, status), 0) + 1
        if status == 200:
            kind = "local" if json.loads(body).get("served_by") == conn.addr else "forwarded"
            lat[kind].append(ms)
    for kind, v in lat.items():
        print(f"result {kind} {len(v)} {pct(v, 50):.2f} {pct(v, 90):.2f} {pct(v, 99):.2f} {max(v) if v else float('nan'):.2f}")
    for (what, code), count in sorted(statuses.items()):
        print(f"status {what} {code} {count}")
    print(f"skipped {skipped}")


LAG = re.compile(r'^weir_consumer_lag\{([^}]*)\} (\S+)$')


def caught_up(records, topic, timeout, addrs):
    start = time.time()
    while time.time() - start < timeout:
        lags = {}
        consumed = 0
        for a in addrs:
            try:
                text = urllib.request.urlopen(f"http://{a}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                m = LAG.match(line)
                if m:
                    labels = dict(kv.split("=", 1) for kv in m.group(1).split(","))
                    if labels.get("topic", "").strip('"') == topic:
                        p = labels["partition"].strip('"')
                        lags[p] = max(lags.get(p, 0), float(m.group(2)))
                elif line.startswith("weir_records_consumed_total"):
                    consumed += float(line.rsplit(" ", 1)[1])
        if lags and consumed >= records and all(v == 0 for v in lags.values()) and len(lags) >= 3:
            print(f"caught_up {time.time() - start:.2f}")
            return
        time.sleep(0.1)
    sys.exit(f"not caught up in {timeout} s")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "queries":
        queries(float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:])
    elif mode == "caught-up":
        caught_up(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)
