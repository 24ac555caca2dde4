"""A ring over all hosts: each worker serves, pings its right-hand peer, pongs its left.

mhtest run examples/tests/pingpong.py                    # two local workers
mhtest run examples/tests/pingpong.py --hosts h1,h2,h3   # one worker per host
"""

from mhtest import MultiHostTest


class PingPong(MultiHostTest):
    """Every worker pings its neighbour over TCP; round-trip times on the whiteboards.

    :mhtest: tags=multihost,example
    """

    def test(self):
        workers = [
            self.worker("pingpong_worker.py", host, params={"index": i})
            for i, host in enumerate(self.hosts)
        ]
        results = self.run_workers(workers, timeout=float(self.params.get("worker_timeout", 120)))
        self.whiteboard = "\n".join(f"{r.name}: {r.whiteboard}" for r in results)
