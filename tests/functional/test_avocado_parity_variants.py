"""Variants as Avocado 113's yaml_to_mux plugin makes them: listings, IDs and params compared.

The YAML files are Avocado's own (tests/data/avocado-mux, copied from the avocado-framework
repository at its 113.0 tag: examples/yaml_to_mux/, examples/tests/*.data/ and the
yaml_to_mux plugin's tests/.data/). `avocado variants` and `mhtest variants` must print the
same lines; `avocado run -m` and `mhtest run -m` must give the same test IDs, statuses,
reasons and params.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .avocado_parity import ROOT, avocado_mux_bin, run_both, write_both

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DATA = ROOT / "tests" / "data" / "avocado-mux"
FILES = [
    "yaml_to_mux/simple.yaml",
    "yaml_to_mux/simple_vars.yaml",
    "yaml_to_mux/types.yaml",
    "yaml_to_mux/hw/hw.yaml",
    "yaml_to_mux/os/linux.yaml",
    "tests/multiplextest.py--multiplextest.yaml",
    "tests/sleeptenmin.py--sleeptenmin.yaml",
    "tests/linuxbuild.py--linuxbuild.yaml",
    "tests/custom_env_variable.sh--variants.yaml",
    "selftests/mux-selftest.yaml",
    "selftests/mux-selftest-advanced.yaml",
    "selftests/mux-selftest-params.yaml",
    "selftests/mux-selftest-using.yaml",
    "selftests/mux-environment.yaml",
    "selftests/empty_file",
]


def _lines(text: str) -> list[str]:
    """Output lines, with each run of a node's filter lines sorted: Avocado prints those sets
    in Python's hash order, which changes from run to run."""
    out: list[str] = []
    run: list[str] = []
    for line in text.splitlines():
        if "\u2192 filter-" in line:
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        out.append(line)
    return out + sorted(run)


def _both(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, ...]:
    avocado = [str(avocado_mux_bin()), "variants", *args]
    mhtest = [sys.executable, "-m", "mhtest", "variants", *args]
    return tuple(
        subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
        for cmd in (avocado, mhtest)
    )


def _same_listing(args: list[str], cwd: Path = DATA) -> str:
    av, mh = _both(args, cwd)
    assert av.returncode == 0, av.stdout + av.stderr
    assert mh.returncode == 0, mh.stdout + mh.stderr
    assert _lines(mh.stdout) == _lines(av.stdout), f"$ variants {' '.join(args)}\n{mh.stdout}"
    return mh.stdout


@pytest.mark.parametrize("name", FILES)
def test_variants_of_avocados_examples_are_avocados(name: str) -> None:
    # --summary 4 shows the tree with each node's values and each leaf's inherited ones;
    # --variants 3 each variant's ID, leaves and values: everything either knows.
    full = _same_listing(["-m", name, "--summary", "4", "--variants", "3"])
    _same_listing(["-m", name])  # the default: the variants' IDs and leaves
    if name != "selftests/empty_file":
        assert "Variant " in full


def test_nested_includes_resolve_from_the_including_file(tmp_path: Path) -> None:
    """complex.yaml includes os/windows.yaml and then hw/hw.yaml. Avocado 113 resolves the
    second against the last file it loaded (its loader keeps the path on the class) and
    fails; mhtest resolves each include against the file that has it. With hw/ reachable
    from os/ too, Avocado loads the file as intended, and both agree."""
    av, mh = _both(["-m", "complex.yaml"], DATA / "yaml_to_mux")
    assert "os/hw/hw.yaml' included from 'os/windows.yaml' does not exist" in av.stdout + av.stderr
    assert mh.returncode == 0 and "Variant " in mh.stdout, mh.stderr
    shutil.copytree(DATA / "yaml_to_mux", tmp_path / "mux")
    (tmp_path / "mux" / "os" / "hw").symlink_to("../hw")
    listed = _same_listing(
        ["-m", "complex.yaml", "--summary", "4", "--variants", "3"], tmp_path / "mux"
    )
    # hw.yaml's arm leaf filters itself out: it wants /run/os/linux, which complex.yaml
    # does not make (its includes merge into /run/os).
    assert "Variant run-hw-cpu-intel-disk-scsi-os-distros-redhat-fedora-flavor-" in listed
    assert "/run/hw/cpu/arm" not in listed.split("Multiplex variants")[1]


@pytest.mark.parametrize(
    "args",
    [
        # Where the file goes: the plugin's selftest filters name /virt.
        ["-m", "/virt:selftests/mux-selftest.yaml", "--variants", "2"],
        ["-m", "distro:selftests/mux-selftest.yaml"],
        # Several files merge, in order.
        ["-m", "selftests/mux-environment.yaml", "yaml_to_mux/simple_vars.yaml", "--variants", "3"],
        [
            "--mux-filter-only",
            "/run/hw/cpu/intel",
            "/run/distro",
            "-m",
            "selftests/mux-environment.yaml",
        ],
        ["-m", "selftests/mux-environment.yaml", "--mux-filter-out", "/run/hw/disk/scsi"],
        [
            "-m",
            "yaml_to_mux/simple.yaml",
            "--mux-inject",
            "/run/first:size:5",
            "key:[1, 2]",
            "--summary",
            "3",
        ],
        ["-m", "yaml_to_mux/simple.yaml", "--tree", "--contents", "--inherit"],
        ["-m", "yaml_to_mux/types.yaml", "--summary", "brief", "--variants", "normal"],
    ],
)
def test_variants_options_are_avocados(args: list[str]) -> None:
    _same_listing(args)


def test_json_variants_dump_is_avocados(tmp_path: Path) -> None:
    name = "selftests/mux-selftest-advanced.yaml"
    av, mh = (tmp_path / "av.json", tmp_path / "mh.json")
    for out, which in ((av, 0), (mh, 1)):
        proc = _both(["-m", name, "--json-variants-dump", str(out)], DATA)[which]
        assert proc.returncode == 0, proc.stderr
    assert json.loads(mh.read_text()) == json.loads(av.read_text())


PARAMS_PY = """
from FRAMEWORK import Test


class Params(Test):
    def test(self):
        self.whiteboard = repr(
            (
                self.params.get("value", "*/by_type/*"),
                self.params.get("value", path="/run/some/*")[:10],
                self.params.get("key"),
                self.params.get("missing", default="dflt"),
                sorted((path, key) for path, key, _ in self.params.iteritems()),
            )
        )

    def test_clash(self):
        self.params.get("value")
"""

SLEEP_PY = """
from FRAMEWORK import Test


class Sleep(Test):
    def test(self):
        self.whiteboard = repr(self.params.get("sleep_length"))
        if self.params.get("sleep_length") > 4:
            self.fail("too long: %s" % self.params.get("sleep_length"))
"""

ENV_SH = """
#!/bin/sh
echo "$CUSTOM_VARIABLE" > "$AVOCADO_TEST_OUTPUTDIR/seen"
"""


def _compare_runs(tmp_path: Path, refs: list[str], args: list[str]) -> dict:
    both = run_both(tmp_path, refs, tuple(args), avocado=[str(avocado_mux_bin())])
    assert sorted(both.mhtest) == sorted(both.avocado), both.mhtest_output + both.avocado_output
    for name, avocado in both.avocado.items():
        mhtest = both.mhtest[name]
        got = (mhtest["status"], mhtest["fail_reason"], mhtest["whiteboard"])
        whiteboard = "" if avocado["whiteboard"] == "<unknown>" else avocado["whiteboard"]
        assert got == (avocado["status"], avocado["fail_reason"], whiteboard), name
    return both.mhtest


def test_run_with_variants_is_avocados(tmp_path: Path) -> None:
    write_both(
        tmp_path, {"params.py": PARAMS_PY, "sleep.py": SLEEP_PY, "env.sh": ENV_SH}, ("env.sh",)
    )
    for where in ("av", "mh"):
        for name in ("yaml_to_mux/types.yaml", "tests/sleeptest.py--sleeptest.yaml"):
            shutil.copy(DATA / name, tmp_path / where / Path(name).name)
        shutil.copy(
            DATA / "tests/env_variables.sh--env_variables.yaml", tmp_path / where / "env.yaml"
        )
    results = _compare_runs(tmp_path, ["params.py"], ["-m", "types.yaml"])
    assert "params.py:Params.test;run-by_type-string-some-path-containing-b61d" in results
    assert all("Multiple" in r["fail_reason"] for n, r in results.items() if "clash" in n)
    results = _compare_runs(tmp_path, ["sleep.py"], ["-m", "sleeptest.py--sleeptest.yaml"])
    assert sorted(r["status"] for r in results.values()) == ["FAIL", "FAIL", "PASS", "PASS"]
    results = _compare_runs(tmp_path, ["env.sh"], ["-m", "env.yaml"])
    seen = sorted((Path(r["logdir"]) / "data" / "seen").read_text() for r in results.values())
    assert seen == ["A\n", "ASDFASDF\n", "This is very long\nmultiline\ntext.\n"]
    # --mux-path: where params.get(key) looks first; two tests, each variant's in turn.
    results = _compare_runs(
        tmp_path,
        ["params.py:Params.test_clash", "sleep.py"],
        ["-m", "types.yaml", "--mux-path", "/run/some/*", "--execution-order", "tests-per-variant"],
    )
    assert [n.split(";")[0] for n in sorted(results, key=lambda n: results[n]["uid"])][:2] == [
        "params.py:Params.test_clash",
        "sleep.py:Sleep.test",
    ]
