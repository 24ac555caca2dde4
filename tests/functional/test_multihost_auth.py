"""A multi-host run is authenticated: a process that finds its sync port cannot join it.

Before, any local user of a host could reach the forwarded sync port, join as a worker and
feed the others forged data; the run's server now accepts only the keys it made for its
own workers, each bound to its worker's name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mhtest.sync import SyncClient
from mhtest.sync.errors import SyncError

from .conftest import running_mhtest, wait_for

pytestmark = pytest.mark.timeout(90)

PAIR_PY = '''
import os
import time

from mhtest import MultiHostTest, Test


class Pair(MultiHostTest):
    def test(self):
        workers = [
            self.worker(f"{self.filename}:Side.test", host, params={"index": i})
            for i, host in enumerate(self.hosts)
        ]
        self.run_workers(workers, timeout=60)


class Side(Test):
    """:mhtest: worker"""

    def test(self):
        marks = self.params.get("marks")
        name = self.params.get("host")
        with open(os.path.join(marks, name + ".addr"), "w") as out:
            out.write(os.environ["MHTEST_SYNC_ADDRESS"])
        deadline = time.monotonic() + 40
        while not os.path.exists(os.path.join(marks, "attacked")):
            assert time.monotonic() < deadline, "the attack never happened"
            time.sleep(0.05)
        if self.params.get("index") == 0:
            self.sync.post("token", "genuine")
        else:
            self.whiteboard = str(self.sync.wait("token", timeout=30))
'''


def test_a_stranger_cannot_join_a_multihost_run(write_tests, tmp_path: Path) -> None:
    tests = write_tests({"pair.py": PAIR_PY})
    marks = tmp_path / "marks"
    marks.mkdir()
    args = ["run", f"{tests / 'pair.py'}:Pair", "-p", f"marks={marks}"]
    with running_mhtest(args, tmp_path, tmp_path / "results") as proc:
        wait_for(lambda: len(list(marks.glob("*.addr"))) == 2, 40, "both workers to start")
        address = (marks / "local-2.addr").read_text()
        refused = []
        for name in ("local-2", "intruder"):  # before the real one connects, and a new name
            try:
                stranger = SyncClient(address, name, timeout=5)
                stranger.post("token", "forged")
                stranger.close()
            except SyncError as exc:
                refused.append(str(exc))
        (marks / "attacked").touch()
        out, err = proc.communicate(timeout=60)
    assert len(refused) == 2, f"a client without the run's keys joined it: {refused}"
    assert all("did not accept this client" in r or "key" in r for r in refused), refused
    assert proc.returncode == 0, out + err
    job = (tmp_path / "results" / "latest").resolve()
    worker = next((job / "test-results").glob("*/workers/2-local-2"))
    assert (worker / "whiteboard").read_text() == "{'local-1': 'genuine'}"
