"""A TCP sink for sync_tcp_client.py, run by a separate `mhtest run` that meets it via sync.

    mhtest run examples/tests/sync_tcp_server.py --sync-server 127.0.0.1:5555
    mhtest run examples/tests/sync_tcp_client.py --sync 127.0.0.1:5555

The two jobs swap the listening port with an exchange, and compare what was sent with
what arrived with another one. Params: `listen_address` (default 127.0.0.1),
`sync_count` (participants, default 2).
"""

import json
import socket
import threading

from mhtest import Test


class SyncTCPServer(Test):
    """Count the bytes a client of another run sends; both sides must agree on the total.

    :mhtest: worker
    """

    timeout = 120

    def test(self):
        count = int(self.params.get("sync_count", default=2))
        address = self.params.get("listen_address", default="127.0.0.1")
        received = []
        with socket.create_server((address, 0)) as listener:
            listener.settimeout(60)

            def sink():
                conn, peer = listener.accept()
                self.log.info("client connected from %s:%s", *peer[:2])
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
            host, port = listener.getsockname()[:2]
            self.log.info("listening on %s:%s", host, port)
            self.sync.exchange(
                "tcp-endpoint", {"role": "server", "host": host, "port": port}, count=count
            )
            thread.join(90)
        if not received:
            self.fail("the client never connected or never finished sending")
        results = self.sync.exchange(
            "tcp-result", {"role": "server", "received": received[0]}, count=count
        )
        sent = sum(r["sent"] for r in results.values() if r.get("role") == "client")
        self.sync.barrier("tcp-done", count=count)
        if received[0] != sent:
            self.fail(f"received {received[0]} bytes but the client sent {sent}")
        self.whiteboard = json.dumps({"bytes_received": received[0]})
