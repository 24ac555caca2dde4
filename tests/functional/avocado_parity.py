"""One test tree run under Avocado 113 and under mhtest, for the parity tests.

``avocado_bin()``
    bench/.venv-avocado/bin/avocado, installed as bench/local_overhead.py does when it
    is missing; the calling test is skipped, saying why, when it cannot be installed.
``bench_venv(name, packages)``
    bench/NAME, a virtual environment with those packages, made when missing; skips likewise.
``avocado_mux_bin()``
    The same Avocado with its yaml_to_mux varianter plugin, in bench/.venv-avocado-mux (kept
    apart so that the benchmark's Avocado does not load the plugin); skips likewise.
``write_both(base, files)``
    Writes each file twice, under ``base/av`` and ``base/mh``: ``FRAMEWORK`` in it
    becomes ``avocado`` and ``mhtest`` (a port changes only its import lines).
``run_both(base, refs, ...) -> Both``
    Runs REFS under both (in ``base/av`` and ``base/mh``) and reads each job's results,
    {test name without its number: result}, Avocado's spellings made mhtest's
    (``INTERRUPTED`` is ``INTERRUPT``, a missing reason ``<unknown>`` is None).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def avocado_bin() -> Path:
    """Avocado 113's command (see bench/local_overhead.py), or skip the test."""
    bench = sys.modules.get("mhtest_bench_local_overhead")
    if bench is None:
        spec = importlib.util.spec_from_file_location(
            "mhtest_bench_local_overhead", ROOT / "bench" / "local_overhead.py"
        )
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bench  # its dataclasses look their module up there
        spec.loader.exec_module(bench)
    try:
        return bench.avocado_bin()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"Avocado 113 cannot be installed here ({exc}): nothing to compare with")


def bench_venv(name: str, packages: list[str], system_site: bool = False) -> Path:
    """bench/NAME, a virtual environment with `packages` (made when missing), or skip."""
    avocado_bin()  # skips when Avocado cannot be installed here at all
    venv = ROOT / "bench" / name
    try:
        if not (venv / "bin" / "python").exists():
            extra = ["--system-site-packages"] if system_site else []
            subprocess.run(
                [sys.executable, "-m", "venv", *extra, str(venv)], check=True, timeout=300
            )
            pip = [str(venv / "bin" / "pip"), "install", "-q", *packages]
            subprocess.run(pip, check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"{', '.join(packages)} cannot be installed here: {exc}")
    return venv


def avocado_mux_bin() -> Path:
    """Avocado 113 with avocado-framework-plugin-varianter-yaml-to-mux 113, or skip."""
    plugin = "avocado-framework-plugin-varianter-yaml-to-mux==113.0"
    return bench_venv(".venv-avocado-mux", ["avocado-framework==113.0", plugin]) / "bin" / "avocado"


def write_both(base: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> None:
    for framework, where in (("avocado", "av"), ("mhtest", "mh")):
        for name, source in files.items():
            path = base / where / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).lstrip("\n").replace("FRAMEWORK", framework))
            if name in executable:
                path.chmod(0o755)


@dataclass
class Both:
    """The results of one run under each framework."""

    avocado: dict[str, dict[str, Any]]
    mhtest: dict[str, dict[str, Any]]
    avocado_output: str
    mhtest_output: str

    def outcome(self, which: str, name: str) -> tuple[str, str | None]:
        result = getattr(self, which)[name]
        return result["status"], result["fail_reason"]

    def debug_log(self, which: str, name: str) -> str:
        return (Path(getattr(self, which)[name]["logdir"]) / "debug.log").read_text()


def _results(results_dir: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((results_dir / "latest" / "results.json").read_text())
    out = {}
    for test in data["tests"]:
        name = test["name"]
        if name.split("-", 1)[0].isdigit():  # mhtest's names carry their number
            name = name.split("-", 1)[1]
        test["status"] = "INTERRUPT" if test["status"] == "INTERRUPTED" else test["status"]
        if test.get("fail_reason") == "<unknown>":
            test["fail_reason"] = None
        out[name] = test
    return out


def run_both(
    base: Path,
    refs: list[str],
    args: tuple[str, ...] = (),
    avocado_config: str | None = None,
    mhtest_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600,
    avocado: list[str] | None = None,
    avocado_args: tuple[str, ...] = (),
) -> Both:
    avocado = list(avocado or [str(avocado_bin())])
    if avocado_config is not None:
        (base / "avocado.conf").write_text(textwrap.dedent(avocado_config))
        avocado += ["--config", str(base / "avocado.conf")]
    commands = {
        "av": [*avocado, "run", "--job-results-dir", str(base / "av-results"), *refs, *args]
        + list(avocado_args),
        "mh": [sys.executable, "-m", "mhtest", "run", "--job-results-dir", str(base / "mh-results")]
        + [*refs, *args, *mhtest_args],
    }
    outputs = {}
    for where, command in commands.items():
        proc = subprocess.run(
            command,
            cwd=base / where,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        outputs[where] = (
            f"$ {' '.join(command)}\nexit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
    return Both(
        _results(base / "av-results"), _results(base / "mh-results"), outputs["av"], outputs["mh"]
    )


def listed(base: Path, refs: list[str], *args: str) -> tuple[list[str], list[str]]:
    """The tests `list` finds under each framework (Avocado's, mhtest's), in order."""
    command = [str(avocado_bin()), "list", *refs, *args]
    av = subprocess.run(command, cwd=base / "av", capture_output=True, text=True, timeout=120)
    command = [sys.executable, "-m", "mhtest", "list", *refs, *args]
    mh = subprocess.run(command, cwd=base / "mh", capture_output=True, text=True, timeout=120)
    # Avocado: "avocado-instrumented FILE:Class.method"; mhtest: "instrumented  FILE:… [tags]".
    av_tests = [line.split()[1] for line in av.stdout.splitlines() if line.strip()]
    mh_tests = [line.split()[1] for line in mh.stdout.splitlines() if line.strip()]
    return av_tests, mh_tests
