"""Shell workers meet through the real CLI: `mhtest sync`, LAVA's and restraint's commands.

Each test writes a multi-host test whose workers are plain executables (shell scripts), runs
it with `python -m mhtest run`, and reads what the scripts printed. The LAVA and restraint
scripts follow the examples of those projects' own documentation (LAVA's MultiNode API page,
restraint's command reference and Beaker's multihost guide).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .test_multihost import host_args, worker_dirs

PAIR = """
    from mhtest import MultiHostTest


    class Pair(MultiHostTest):
        def test(self):
            first, second = (self.hosts * 2)[:2]
            self.run_workers([
                self.worker("{one}", first, params={one_params}),
                self.worker("{two}", second, params={two_params}),
            ])
"""


def pair(one: str, two: str, one_params: dict | None = None, two_params: dict | None = None) -> str:
    return PAIR.format(
        one=one, two=two, one_params=repr(one_params or {}), two_params=repr(two_params or {})
    )


def outputs(run, ref: str = "pair.py:Pair.test") -> dict[str, tuple[str, str]]:
    """{worker dir: (stdout, stderr)} of the multi-host test's workers."""
    return {
        name: ((d / "stdout").read_text(), (d / "stderr").read_text())
        for name, d in worker_dirs(run, ref).items()
    }


@pytest.mark.timeout(60)
def test_mhtest_sync_commands_in_shell_workers(mhtest, write_tests) -> None:
    base = write_tests(
        {
            "pair.py": pair("one.sh", "two.sh", {"greeting": "hello there", "ports": [1, 2]}),
            "one.sh": """
                #!/bin/sh
                set -e
                echo "me=$(mhtest sync whoami) greeting=$greeting ports=$ports host=$host"
                mhtest sync barrier started --timeout 30
                mhtest sync post address "127.0.0.1:8080"
                mhtest sync exchange sizes 3 --json
                mhtest sync lock disk -- sh -c 'echo "locked by $(mhtest sync whoami)"'
            """,
            "two.sh": """
                #!/bin/sh
                set -e
                mhtest sync barrier started
                echo "address=$(mhtest sync wait address)"
                mhtest sync exchange sizes 5 --json
                mhtest sync lock disk -- sh -c 'exit 3' || echo "lock passed on $?"
            """,
        },
        executable=("one.sh", "two.sh"),
    )
    run = mhtest("run", str(base / "pair.py"))
    assert run.code == 0, run
    out = outputs(run)
    one, two = out["1-local-1"][0], out["2-local-2"][0]
    # params as Avocado gives a simple test its params: str() of each value
    assert "me=local-1 greeting=hello there ports=[1, 2] host=local-1" in one
    assert json.loads(one.splitlines()[1]) == {"local-1": 3, "local-2": 5}
    assert "locked by local-1" in one
    assert "address=127.0.0.1:8080" in two
    assert json.loads(two.splitlines()[1]) == {"local-1": 3, "local-2": 5}
    assert "lock passed on 3" in two  # the command's own exit status
    # The sync server's record: the barrier with both arrivals, the post, the lock.
    record = [json.loads(line) for line in worker_record(run).read_text().splitlines()]
    kinds = [e["event"] for e in record]
    assert kinds[0] == "start" and kinds[-1] == "end"
    barrier = next(e for e in record if e["event"] == "barrier")
    assert barrier["name"] == "started" and set(barrier["arrivals"]) == {"local-1", "local-2"}
    assert barrier["outcome"] == "done" and max(barrier["arrivals"].values()) <= barrier["t"]
    assert any(e["event"] == "post" and e["who"] == "local-1" for e in record)
    assert {e["who"] for e in record if e["event"] == "lock"} == {"local-1", "local-2"}


def worker_record(run, ref: str = "pair.py:Pair.test") -> Path:
    return Path(run.result(ref)["logdir"]) / "sync.jsonl"


@pytest.mark.timeout(60)
def test_timeout_and_abort_exit_codes(mhtest, write_tests) -> None:
    base = write_tests(
        {
            "pair.py": pair("early.sh", "late.sh"),
            # Times out alone at a barrier, then ends (well): its partner's wait is aborted.
            "early.sh": """
                #!/bin/sh
                mhtest sync barrier never --timeout 1
                echo "barrier exit $?"
            """,
            "late.sh": """
                #!/bin/sh
                mhtest sync wait nobody-posts-this --timeout 60
                echo "wait exit $?"
            """,
        },
        executable=("early.sh", "late.sh"),
    )
    run = mhtest("run", str(base / "pair.py"))
    assert run.code == 0, run
    out = outputs(run)
    assert out["1-local-1"][0].strip() == "barrier exit 124"
    assert out["1-local-1"][1].splitlines() == [
        "mhtest sync barrier: timeout: barrier 'never' timed out after 1 s (local-1's timeout): "
        "1 of 2 arrived (arrived: local-1; missing: local-2)"
    ]
    assert out["2-local-2"][0].strip() == "wait exit 125"
    (reason,) = out["2-local-2"][1].splitlines()
    assert reason.startswith("mhtest sync wait: aborted: wait 'nobody-posts-this' aborted: ")
    assert "local-1 left (its test ended)" in reason


@pytest.mark.timeout(60)
def test_sync_commands_only_in_workers(mhtest, write_tests) -> None:
    base = write_tests(
        {
            "plain.sh": """
                #!/bin/sh
                command -v lava-send && exit 1
                mhtest_code=0
                "$python" -m mhtest sync barrier x 2>err.txt || mhtest_code=$?
                echo "code $mhtest_code: $(cat err.txt)"
                rm -f err.txt
            """,
        },
        executable=("plain.sh",),
    )
    run = mhtest("run", str(base / "plain.sh"), "-p", f"python={sys.executable}")
    assert run.code == 0, run
    out = Path(run.result("plain.sh")["logdir"], "stdout").read_text()
    assert out.strip() == (
        "code 1: mhtest sync barrier: not a worker of a multi-host test: "
        "MHTEST_SYNC_PARTICIPANT is not set (run this from a worker's test, or set "
        "MHTEST_SYNC_ADDRESS and _PARTICIPANT)"
    )


# LAVA's MultiNode API page, "Example 2: iperf client-server test" and "Example 3", with
# the iperf commands left out (the messages, their data and the cache file as documented).
LAVA_SERVER = """
    #!/bin/sh
    set -e
    IP=127.0.0.1
    echo $IP
    lava-send server-ready server-ip=$IP
    lava-wait client-done
    lava-sync ready
    lava-sync done
    echo "role=$(lava-role) roles=$(lava-role list)"
    lava-group
    lava-group client
    lava-group nobody || echo "no such role: $?"
"""
LAVA_CLIENT = """
    #!/bin/sh
    set -e
    lava-wait server-ready
    server=$(cat /tmp/lava_multi_node_cache.txt | cut -d = -f 2)
    echo "server at $server"
    lava-send client-done
    # refer to the server by name
    server=$(lava-group | grep 'server$' | cut -f 1)
    echo "server is $server"
    lava-sync ready
    lava-send result score=42
    lava-sync done
    echo "self=$(lava-self)"
"""
LAVA_OBSERVER = """
    #!/bin/sh
    set -e
    lava-sync ready
    lava-wait-all result client
    cat "$LAVA_MULTI_NODE_CACHE"
    lava-sync done
"""


@pytest.mark.timeout(60)
def test_lava_multinode_commands(mhtest, write_tests, tmp_path) -> None:
    base = write_tests(
        {
            "lava.py": """
                from mhtest import MultiHostTest


                class Lava(MultiHostTest):
                    default_local_workers = 3

                    def test(self):
                        cache = self.params.get("observer_cache")
                        self.run_workers([
                            self.worker("server.sh", self.hosts[0], {"role": "server"}),
                            self.worker("client.sh", self.hosts[1], {"role": "client"}),
                            self.worker("observer.sh", self.hosts[2], {
                                "role": "watcher", "LAVA_MULTI_NODE_CACHE": cache,
                            }),
                        ])
            """,
            "server.sh": LAVA_SERVER,
            "client.sh": LAVA_CLIENT,
            "observer.sh": LAVA_OBSERVER,
        },
        executable=("server.sh", "client.sh", "observer.sh"),
    )
    cache = tmp_path / "observer-cache.txt"
    run = mhtest("run", str(base / "lava.py"), "-p", f"observer_cache={cache}")
    assert run.code == 0, run
    out = outputs(run, "lava.py:Lava.test")
    server, client, observer = (out[k][0] for k in ("1-local-1", "2-local-2", "3-local-3"))
    assert server.splitlines() == [
        "127.0.0.1",
        "role=server roles=server client watcher",
        "local-1\tserver",
        "local-2\tclient",
        "local-3\twatcher",
        "local-2",
        "no such role: 1",
    ]
    assert client.splitlines() == ["server at 127.0.0.1", "server is local-1", "self=local-2"]
    assert observer.splitlines() == ["local-2:score=42"]


@pytest.mark.timeout(60)
def test_restraint_sync_commands(mhtest, write_tests) -> None:
    # Beaker's multihost guide: the roles are variables listing their systems; the server
    # sets READY and waits for DONE from the clients, who wait for READY first.
    base = write_tests(
        {
            "pair.py": pair("server.sh", "client.sh", {"role": "SERVERS"}, {"role": "CLIENTS"}),
            "server.sh": """
                #!/bin/sh
                echo "servers=$SERVERS clients=$CLIENTS"
                rstrnt-sync-set -s READY
                rstrnt-sync-block -s DONE ${CLIENTS} --timeout 3600 || exit 1
                rstrnt-sync-block -s NEVER -s DONE --any "${CLIENTS}" || exit 1
                rstrnt-sync-block -s NEVER ${CLIENTS} --timeout 1
                echo "timed out: $?"
                rstrnt-sync-set -s FINISHED
            """,
            "client.sh": """
                #!/bin/sh
                rstrnt-sync-block -s "READY" "${SERVERS}" --timeout 3600 || exit 1
                rstrnt-sync-set -s "DONE"
                rstrnt-sync-block -s FINISHED "${SERVERS}" || exit 1
                echo "client done"
            """,
        },
        executable=("server.sh", "client.sh"),
    )
    run = mhtest("run", str(base / "pair.py"))
    assert run.code == 0, run
    out = outputs(run)
    assert out["1-local-1"][0].splitlines() == [
        "servers=local-1 clients=local-2",
        "timed out: 124",
    ]
    assert (
        "rstrnt-sync-block: timeout: wait 'rstrnt:NEVER' timed out after 1 s" in out["1-local-1"][1]
    )
    assert out["2-local-2"][0].strip() == "client done"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_lava_commands_on_sshd_hosts(mhtest, write_tests, warm_hosts) -> None:
    hosts = warm_hosts(2)
    base = write_tests(
        {
            "pair.py": pair("server.sh", "client.sh", {"role": "server"}, {"role": "client"}),
            "server.sh": "#!/bin/sh\nset -e\nlava-send server-ready server-ip=$host_address\n"
            "lava-wait client-done\nmhtest sync barrier end\n",
            "client.sh": "#!/bin/sh\nset -e\nlava-wait server-ready\n"
            "cat /tmp/lava_multi_node_cache.txt\nlava-send client-done\nmhtest sync barrier end\n",
        },
        executable=("server.sh", "client.sh"),
    )
    run = mhtest("run", str(base / "pair.py"), *host_args(hosts), timeout=110)
    assert run.code == 0, run
    out = outputs(run)
    client = out[f"2-{hosts[1].alias}"][0]
    assert client.strip() == f"server-ip={hosts[0].address}"
