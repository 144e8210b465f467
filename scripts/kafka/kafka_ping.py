#!/usr/bin/env python3
"""Minimal Kafka readiness probe used by ./dev (no JVM start-up cost).

Sends ApiVersions v0 and then a real Metadata request (lowest non-flexible
version the broker supports, >= 4) and succeeds only if the broker answers
with at least one live broker in the cluster metadata.

usage: kafka_ping.py HOST:PORT [timeout_seconds]
exit 0 = ready (prints "cluster_id=<id> brokers=<n> controller=<id>"), 1 = not ready.
"""
import socket
import struct
import sys

CLIENT_ID = b"weir-dev-ping"


def request(sock, api_key, version, corr, body=b""):
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    resp = recv_exact(sock, size)
    got_corr = struct.unpack(">i", resp[:4])[0]
    if got_corr != corr:
        raise RuntimeError(f"correlation id mismatch {got_corr} != {corr}")
    return resp[4:]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)
        self.p += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.d[self.p:self.p + n].decode()
        self.p += n
        return s


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1].rsplit(":", 1)
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.settimeout(timeout)
            # ApiVersions v0: every broker supports it for version negotiation.
            r = Reader(request(s, 18, 0, 1))
            err = r.take(">h")
            if err != 0:
                raise RuntimeError(f"ApiVersions error {err}")
            versions = {}
            for _ in range(r.take(">i")):
                key, lo, hi = r.take(">hhh")
                versions[key] = (lo, hi)
            if 3 not in versions:
                raise RuntimeError("broker does not advertise Metadata")
            lo, hi = versions[3]
            v = max(lo, 4)
            if v > min(hi, 8):
                raise RuntimeError(f"no non-flexible Metadata version in {lo}..{hi}")
            # Metadata vN (4..8): topics = [] (no topics), allow_auto_topic_creation = false
            body = struct.pack(">i", 0) + struct.pack(">?", False)
            if v >= 8:
                body += struct.pack(">??", False, False)  # include authorized ops
            r = Reader(request(s, 3, v, 2, body))
            r.take(">i")  # throttle_time_ms
            brokers = []
            for _ in range(r.take(">i")):
                node = r.take(">i")
                bhost = r.string()
                bport = r.take(">i")
                r.string()  # rack
                brokers.append((node, bhost, bport))
            cluster_id = r.string()
            controller = r.take(">i")
            if not brokers:
                raise RuntimeError("metadata has no live brokers yet")
            print(f"cluster_id={cluster_id} brokers={len(brokers)} controller={controller}")
            return 0
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        print(f"not ready: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
