"""The multi-host RFC's netperf problem: a throughput server on one host, a client on another.

mhtest run examples/tests/netperf.py                       # both on local workers
mhtest run examples/tests/netperf.py --hosts h1,h2         # server on h1, client on h2
"""

from mhtest import MultiHostTest


class NetPerf(MultiHostTest):
    """Server and client meet at `server-started` and `test-finished`.

    :mhtest: tags=multihost,example
    """

    def test(self):
        server_host = self.hosts[0]
        client_host = self.hosts[1] if len(self.hosts) > 1 else self.hosts[0]
        seconds = float(self.params.get("duration", 1.0))
        workers = [
            self.worker("netperf_worker.py:NetServer.test", server_host, name="server"),
            self.worker(
                "netperf_worker.py:NetClient.test",
                client_host,
                name="client",
                params={"duration": seconds},
            ),
        ]
        results = self.run_workers(workers, timeout=60 + seconds)
        client = next(r for r in results if r.name == "client")
        self.whiteboard = client.whiteboard
        self.log.info("throughput: %s", client.whiteboard)
