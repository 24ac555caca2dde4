"""Measure TCP throughput to sync_tcp_server.py, which runs in another `mhtest run`.

    mhtest run examples/tests/sync_tcp_server.py --sync-server 127.0.0.1:5555
    mhtest run examples/tests/sync_tcp_client.py --sync 127.0.0.1:5555

The server's port arrives through an exchange; the throughput goes on the whiteboard as
JSON ({"throughput_mbit_s": ..., "bytes_sent": ..., "seconds": ...}). Params: `duration`
(seconds of sending, default 1), `sync_count` (participants, default 2).
"""

import json
import socket
import time

from mhtest import Test

CHUNK = b"\0" * (1 << 16)


class SyncTCPClient(Test):
    """Send for `duration` seconds to the server the exchange names; report the throughput.

    :mhtest: worker
    """

    timeout = 120

    def test(self):
        count = int(self.params.get("sync_count", default=2))
        duration = float(self.params.get("duration", default=1.0))
        endpoints = self.sync.exchange("tcp-endpoint", {"role": "client"}, count=count)
        servers = [e for e in endpoints.values() if e.get("role") == "server"]
        if len(servers) != 1:
            self.error(f"expected one server in the exchange, got {endpoints}")
        server = servers[0]
        sent = 0
        with socket.create_connection((server["host"], server["port"]), timeout=30) as conn:
            start = time.perf_counter()
            while time.perf_counter() - start < duration:
                conn.sendall(CHUNK)
                sent += len(CHUNK)
            elapsed = time.perf_counter() - start
        results = self.sync.exchange("tcp-result", {"role": "client", "sent": sent}, count=count)
        received = [r["received"] for r in results.values() if r.get("role") == "server"]
        self.sync.barrier("tcp-done", count=count)
        if received != [sent]:
            self.fail(f"sent {sent} bytes but the server received {received}")
        mbps = sent * 8 / elapsed / 1e6
        self.log.info("%.1f Mbit/s to %s:%s", mbps, server["host"], server["port"])
        self.whiteboard = json.dumps(
            {"throughput_mbit_s": round(mbps, 1), "bytes_sent": sent, "seconds": round(elapsed, 3)}
        )
