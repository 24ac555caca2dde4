"""The two workers of netperf.py: a TCP sink that counts bytes, and a client that fills it."""

import json
import socket
import threading
import time

from mhtest import Test

CHUNK = b"\0" * (1 << 16)


class NetServer(Test):
    """Receive until the client is done; report what arrived.

    :mhtest: worker
    :mhtest: tags=worker
    """

    def test(self):
        server = socket.create_server((self.params.get("host_address", default="127.0.0.1"), 0))
        server.settimeout(60)
        received = []

        def sink():
            conn, _ = server.accept()
            total = 0
            with conn:
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    total += len(data)
            received.append(total)

        thread = threading.Thread(target=sink, daemon=True)
        thread.start()
        host, port = server.getsockname()[:2]
        self.sync.exchange("server-address", {"host": host, "port": port})
        self.sync.barrier("server-started")
        self.sync.barrier("test-finished")
        thread.join(30)
        server.close()
        if not received:
            self.fail("the client never connected")
        sent = self.sync.exchange("bytes-sent", None)["client"]
        if received[0] != sent:
            self.fail(f"received {received[0]} bytes, the client sent {sent}")
        self.whiteboard = json.dumps({"bytes_received": received[0]})


class NetClient(Test):
    """Send as fast as possible for `duration` seconds; the throughput goes on the whiteboard.

    :mhtest: worker
    :mhtest: tags=worker
    """

    def test(self):
        address = self.sync.exchange("server-address", None)["server"]
        self.sync.barrier("server-started")
        duration = float(self.params.get("duration", default=1.0))
        sent = 0
        with socket.create_connection((address["host"], address["port"]), timeout=30) as conn:
            start = time.perf_counter()
            while time.perf_counter() - start < duration:
                conn.sendall(CHUNK)
                sent += len(CHUNK)
            elapsed = time.perf_counter() - start
        self.sync.barrier("test-finished")
        self.sync.exchange("bytes-sent", sent)
        mbps = sent * 8 / elapsed / 1e6
        self.whiteboard = json.dumps({"throughput_mbit_s": round(mbps, 1), "bytes_sent": sent})
        self.log.info("%.1f Mbit/s to %s:%s", mbps, address["host"], address["port"])
