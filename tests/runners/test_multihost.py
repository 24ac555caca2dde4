"""MultiHostTest's corner cases: worker names, bad worker descriptions and references.

Runs of real workers are in tests/functional/test_multihost.py; here the checks stop
before anything starts, except the last ones, which run real local workers.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mhtest import MultiHostTest
from mhtest.runners.fanout import _direct_bind
from mhtest.runners.multihost import Worker, unique_names
from mhtest.test import TestError as BadTest  # not named Test*: pytest would collect it

WORKER_PY = """
from mhtest import Test


class One(Test):
    def test(self):
        self.whiteboard = self.params.get("host")


class Two(Test):
    def test(self):
        pass

    def test_other(self):
        pass
"""


class Ring(MultiHostTest):
    def test(self):
        pass


def make(tmp_path: Path, hosts: str | None = None) -> Ring:
    (tmp_path / "w.py").write_text(WORKER_PY)
    params = {"hosts": hosts} if hosts else {}
    return Ring(params=params, logdir=str(tmp_path / "logs"), basedir=str(tmp_path))


def test_default_is_two_local_workers(tmp_path: Path) -> None:
    assert make(tmp_path).hosts == ["local", "local"]


def test_a_worker_reads_worker_names_and_resolves_no_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a worker, `hosts` are the workers' names: "net server" is no host string."""
    monkeypatch.setenv("MHTEST_WORKER", "h1")
    (tmp_path / "w.py").write_text(WORKER_PY)
    ring = Ring(params={"hosts": ["h1", "net server"], "host": "h1"}, logdir=str(tmp_path))
    assert ring.is_worker
    assert ring.hosts == ["h1", "net server"]


def test_hosts_param(tmp_path: Path) -> None:
    assert make(tmp_path, "local,local,local").hosts == ["local"] * 3


def test_names_default_to_the_host_numbered_when_repeated() -> None:
    workers = [Worker("w.py", h) for h in ("a", "b", "a", "c", "a")]
    assert unique_names(workers) == ["a-1", "b", "a-2", "c", "a-3"]


def test_names_given_are_kept() -> None:
    workers = [Worker("w.py", "a", name="server"), Worker("w.py", "a", name="client")]
    assert unique_names(workers) == ["server", "client"]


def test_a_name_given_twice_is_refused_naming_it() -> None:
    workers = [Worker("w.py", "a", name="x"), Worker("w.py", "b", name="x"), Worker("w.py", "c")]
    with pytest.raises(BadTest, match=r"^worker names must be unique: x given to more"):
        unique_names(workers)


def test_a_given_name_that_clashes_with_a_default_one() -> None:
    # Two workers on a are a-1 and a-2; a third one called a-1 by hand is a clash.
    workers = [Worker("w.py", "a"), Worker("w.py", "a"), Worker("w.py", "b", name="a-1")]
    with pytest.raises(BadTest, match="a-1 given to more than one worker"):
        unique_names(workers)


def test_worker_on_a_host_the_test_does_not_have(tmp_path: Path) -> None:
    test = make(tmp_path)
    with pytest.raises(BadTest) as info:
        test.worker("w.py", "elsewhere")
    assert str(info.value) == (
        "worker 'w.py': host 'elsewhere' is not one of this test's hosts (local, local); "
        "give it with --hosts or -p hosts=…"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_ref": ""}, "the test reference must be a non-empty string"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": 7}, "name must be a non-empty string"),
        ({"name": "n" * 101}, "at most 100 characters"),
        ({"params": ["index", 1]}, "params must be a dict"),
    ],
)
def test_bad_worker_descriptions(tmp_path: Path, kwargs: dict, message: str) -> None:
    test = make(tmp_path)
    args = {"test_ref": "w.py:One.test", "host": "local", **kwargs}
    with pytest.raises(BadTest, match=message):
        test.worker(**args)


def test_run_workers_needs_workers(tmp_path: Path) -> None:
    test = make(tmp_path)
    with pytest.raises(BadTest, match="at least one worker"):
        test.run_workers([])
    with pytest.raises(BadTest, match=r"made by self.worker\(\), not 'w.py'"):
        test.run_workers(["w.py"])


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("missing.py", r"worker local-1 on local: reference '.*missing.py': no such file"),
        ("w.py:Nope.test", r"worker local-1 on local: .*no test matches 'Nope.test'"),
        ("w.py:Two", r"worker local-1 on local: 'w.py:Two' is 2 tests; name one as FILE.py:"),
    ],
)
def test_bad_worker_refs_are_a_clear_error(tmp_path: Path, ref: str, message: str) -> None:
    test = make(tmp_path)
    workers = [test.worker("w.py:One.test", "local"), test.worker(ref, "local")]
    # The bad ref is the second worker's; names are checked per worker.
    workers.reverse()
    with pytest.raises(BadTest, match=message):
        test.run_workers(workers)
    assert not (tmp_path / "logs" / "workers").exists()  # nothing was started


def test_direct_bind_is_the_one_address_the_hosts_see() -> None:
    def host(address: str) -> SimpleNamespace:
        sock = SimpleNamespace(getsockname=lambda: (address, 40000))
        return SimpleNamespace(transport=lambda: SimpleNamespace(sock=sock))

    assert _direct_bind({"a": host("127.0.0.1"), "b": host("127.0.0.1")}) == "127.0.0.1:0"
    assert _direct_bind({"a": host("10.0.0.1"), "b": host("192.168.1.5")}) == "0.0.0.0:0"
    assert _direct_bind({"a": OSError("refused")}) == "127.0.0.1:0"


@pytest.mark.timeout(60)
def test_two_run_workers_calls_keep_every_worker(tmp_path: Path) -> None:
    """Real local workers, twice in one test: directories and results do not collide."""
    test = make(tmp_path)
    first = test.run_workers([test.worker("w.py:One.test", h) for h in test.hosts])
    second = test.run_workers([test.worker("w.py:One.test", "local", name="again")])
    assert [r.status for r in first + second] == ["PASS"] * 3
    assert [(r.uid, r.name) for r in test.worker_results] == [
        (1, "local-1"),
        (2, "local-2"),
        (3, "again"),
    ]
    dirs = sorted(p.name for p in (tmp_path / "logs" / "workers").iterdir())
    assert dirs == ["1-local-1", "2-local-2", "3-again"]
    assert [r.whiteboard for r in test.worker_results] == ["local-1", "local-2", "again"]
    spec = json.loads((tmp_path / "logs" / "workers" / "3-again" / "spec.json").read_text())
    assert spec["params"]["hosts"] == ["again"]


@pytest.mark.timeout(60)
def test_a_worker_failure_is_folded_with_its_name_and_host(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "from mhtest import Test\n\n\nclass Bad(Test):\n"
        "    def test(self):\n        self.fail('wrong answer')\n"
    )
    test = make(tmp_path)
    workers = [test.worker("w.py:One.test", "local"), test.worker("bad.py", "local")]
    with pytest.raises(Exception) as info:
        test.run_workers(workers)
    assert type(info.value).__name__ == "TestFail"
    assert str(info.value) == "worker local-2 on local: FAIL: wrong answer"
    results = test.run_workers(workers, fail=False)
    assert [r.status for r in results] == ["PASS", "FAIL"]


@pytest.mark.timeout(60)
def test_a_worker_that_ends_without_joining_is_not_waited_for(tmp_path: Path) -> None:
    """A skipped worker never joins: the one waiting at a barrier for it is told at once."""
    (tmp_path / "pair.py").write_text(
        "from mhtest import Test, skip\n\n\n"
        "class Skipper(Test):\n"
        "    @skip('not today')\n"
        "    def test(self):\n        pass\n\n\n"
        "class Waiter(Test):\n"
        "    def test(self):\n        self.sync.barrier('together', timeout=120)\n"
    )
    test = make(tmp_path)
    workers = [
        test.worker("pair.py:Skipper.test", "local", name="skipper"),
        test.worker("pair.py:Waiter.test", "local", name="waiter"),
    ]
    results = test.run_workers(workers, fail=False, timeout=150)
    skipper, waiter = results
    assert skipper.status == "SKIP"
    assert waiter.status == "ERROR" and waiter.fail_class == "SyncAborted", waiter
    assert "skipper left" in waiter.fail_reason
    assert waiter.time < 10


def test_a_refused_port_forward_says_what_to_do() -> None:
    import paramiko

    from mhtest.runners.tunnel import ForwardError, RemoteForward

    class Refusing:  # a transport whose server does not allow forwarding (a corner case)
        def request_port_forward(self, *args: object) -> int:
            raise paramiko.SSHException("TCP forwarding request denied")

    host = SimpleNamespace(name="h1", transport=Refusing)
    with pytest.raises(ForwardError) as info:
        RemoteForward(host, ("127.0.0.1", 5555))
    assert str(info.value) == (
        "h1: the SSH server refused a remote port forward for the sync server (TCP "
        "forwarding request denied); allow it (sshd AllowTcpForwarding remote) or use "
        "--sync-direct"
    )


@pytest.mark.timeout(60)
def test_forward_carries_sync_traffic_to_the_server(sshd_host) -> None:
    """A real sshd: a client on the host's forwarded port reaches the sync server."""
    from mhtest.runners.tunnel import RemoteForward
    from mhtest.sync.client import SyncClient
    from mhtest.sync.server import SyncServer

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(SyncServer("127.0.0.1:0", expected=["w"]))
        host = stack.enter_context(sshd_host.make_host())
        forward = stack.enter_context(RemoteForward(host, ("127.0.0.1", server.port)))
        assert forward.remote_port != server.port
        # The host is this machine: its 127.0.0.1 is ours.
        with SyncClient(f"tcp://127.0.0.1:{forward.remote_port}", "w", timeout=10) as client:
            assert client.exchange("hello", {"n": 1}) == {"w": {"n": 1}}
