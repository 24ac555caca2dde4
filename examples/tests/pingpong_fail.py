"""pingpong.py with one worker that fails: the failure is folded into this test's result.

mhtest run examples/tests/pingpong_fail.py      # FAIL, naming the worker and its host
"""

from mhtest import MultiHostTest


class PingPongFail(MultiHostTest):
    """The last worker fails before the ring is up; the others stop at the barrier at once.

    :mhtest: tags=multihost,example,failing
    """

    def test(self):
        fail_index = len(self.hosts) - 1
        workers = [
            self.worker("pingpong_worker.py", host, params={"index": i, "fail_index": fail_index})
            for i, host in enumerate(self.hosts)
        ]
        self.run_workers(workers, timeout=float(self.params.get("worker_timeout", 120)))
