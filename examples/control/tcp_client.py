"""The client side of a TCP test between two hosts (run by examples/control/netperf.srv)."""

import socket
import time

from mhtest import Test


class TCPClient(Test):
    """Sends `megabytes` to `server`:`port`, checks the count it answers, notes Mbit/s.

    :mhtest: worker
    """

    timeout = 120

    def test(self):
        server, port = self.params.get("server"), int(self.params.get("port"))
        size = int(float(self.params.get("megabytes", 8)) * (1 << 20))
        deadline = time.monotonic() + 30
        while True:  # the server side may still be starting
            try:
                conn = socket.create_connection((server, port), timeout=10)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    self.fail(f"nothing listens on {server}:{port} after 30 s")
                time.sleep(0.1)
        block = b"x" * (1 << 16)
        with conn:
            started, sent = time.monotonic(), 0
            while sent < size:
                conn.sendall(block)
                sent += len(block)
            conn.shutdown(socket.SHUT_WR)
            answer = conn.recv(64).decode()
            seconds = time.monotonic() - started
        self.assertEqual(int(answer), sent, f"the server counted {answer} of {sent} bytes")
        rate = sent * 8 / seconds / 1e6
        self.log.info("sent %d bytes in %.3f s: %.1f Mbit/s", sent, seconds, rate)
        self.whiteboard = f"{rate:.1f}"
