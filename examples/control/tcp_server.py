"""The server side of a TCP test between two hosts (run by examples/control/netperf.srv)."""

import socket
import time

from mhtest import Test


class TCPServer(Test):
    """Serves one TCP client on `address`:`port`: counts what it sends, answers the count.

    :mhtest: worker
    """

    timeout = 120

    def test(self):
        address, port = self.params.get("address", "127.0.0.1"), int(self.params.get("port"))
        with socket.create_server((address, port)) as server:
            server.settimeout(60)
            self.log.info("listening on %s:%d", address, port)
            conn, peer = server.accept()
            with conn:
                started, received = time.monotonic(), 0
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    received += len(data)
                conn.sendall(str(received).encode())
        seconds = time.monotonic() - started
        self.log.info("received %d bytes from %s in %.3f s", received, peer[0], seconds)
        self.whiteboard = str(received)
