"""The worker of pingpong.py: serve, learn the peers' ports, ping right, answer left."""

import json
import socket
import threading
import time

from mhtest import Test


class PingPongWorker(Test):
    """One member of the ring (run by pingpong.py, not on its own).

    :mhtest: worker
    :mhtest: tags=worker
    """

    def _serve(self, server, count):
        for _ in range(count):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                data = conn.recv(64)
                conn.sendall(data.replace(b"ping", b"pong"))

    def test(self):
        me = self.params.get("host")
        pings = int(self.params.get("pings", default=5))
        server = socket.create_server((self.params.get("host_address", default="127.0.0.1"), 0))
        server.settimeout(30)
        port = server.getsockname()[1]
        peers = self.sync.exchange("ports", {"address": server.getsockname()[0], "port": port})
        names = self.params.get("hosts")
        right = names[(names.index(me) + 1) % len(names)]
        if self.params.get("index") == self.params.get("fail_index"):
            self.fail(f"{me} was told to fail before serving (fail_index)")
        answering = threading.Thread(target=self._serve, args=(server, pings), daemon=True)
        answering.start()
        self.sync.barrier("serving")
        rtts = []
        for i in range(pings):
            start = time.perf_counter()
            with socket.create_connection(
                (peers[right]["address"], peers[right]["port"]), timeout=10
            ) as conn:
                conn.sendall(f"ping {i} from {me}".encode())
                reply = conn.recv(64).decode()
            rtts.append((time.perf_counter() - start) * 1000)
            if reply != f"pong {i} from {me}":
                self.fail(f"{right} answered {reply!r} to ping {i}")
        answering.join(30)
        server.close()
        self.sync.barrier("done")
        self.log.info("pinged %s %d times", right, pings)
        self.whiteboard = json.dumps(
            {"peer": right, "rtt_ms_min": round(min(rtts), 3), "rtt_ms_max": round(max(rtts), 3)}
        )
