"""Variants from YAML-to-mux files (mhtest.mux, mhtest.variants) and params in a variant.

tests/functional/test_avocado_parity_variants.py compares all of this with Avocado 113's
own output; these are the corners, in-process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mhtest.mux import MuxError
from mhtest.params import Params, variant_values
from mhtest.spec import TestSpec
from mhtest.variants import Variants, multiply, verbosity

DATA = Path(__file__).parent / "data" / "avocado-mux"


def _write(tmp_path: Path, text: str, name: str = "v.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_ids_and_leaves_of_a_simple_mux() -> None:
    variants = list(Variants.from_files([str(DATA / "yaml_to_mux" / "simple.yaml")]))
    # Avocado 113's IDs for its own example (see the parity test).
    assert [v.id for v in variants] == ["run-first-c49a", "run-second-f05f"]
    assert [[leaf.path for leaf in v.leaves] for v in variants] == [["/run/first"], ["/run/second"]]


def test_values_are_inherited_and_lists_joined(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        size: 1
        flags: [a]
        arch: !mux
            x86:
                flags: [b]
            arm:
                size: 2
        """,
    )
    x86, arm = Variants.from_files([path])
    x86_env = x86.leaves[0].environment
    assert (x86_env["size"], x86_env["flags"]) == (1, ["a", "b"])
    assert arm.leaves[0].environment["size"] == 2
    assert arm.leaves[0].environment.origin["size"].path == "/run/arch/arm"


def test_filters_in_the_tree_and_on_the_command_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        cpu: !mux
            intel:
            arm:
                !filter-only : /run/disk/virtio
        disk: !mux
            scsi:
            virtio:
                !filter-out : /run/cpu/intel
        """,
    )
    ids = [v.id.rsplit("-", 1)[0] for v in Variants.from_files([path])]
    assert ids == ["run-cpu-intel-disk-scsi", "run-cpu-arm-disk-virtio"]
    only = Variants.from_files([path], filter_only=["/run/cpu/intel"])
    assert [v.id.rsplit("-", 1)[0] for v in only] == ["run-cpu-intel-disk-scsi"]
    out = Variants.from_files([path], filter_out=["/run/disk/scsi"])
    assert [v.id.rsplit("-", 1)[0] for v in out] == ["run-cpu-arm-disk-virtio"]


def test_using_remove_node_and_injected_values(tmp_path: Path) -> None:
    base = _write(tmp_path, "os: !mux\n    fedora:\n    mint:\n", "base.yaml")
    more = _write(
        tmp_path,
        """
        !using : /deep/er
        os: !mux
            !remove_node : mint
            debian:
        """,
        "more.yaml",
    )
    variants = Variants.from_files([base, f"/:{more}"], injected=["/run/os/fedora:ver:39"])
    paths = [leaf.path for v in variants for leaf in v.leaves]
    # The second file goes under its !using: /er/deep, reversed at a file's root as Avocado
    # 113 does it; so it removes nothing under /run.
    assert paths[:2] == ["/run/os/fedora", "/er/deep/os/debian"]
    assert [v.id for v in variants] == [
        "er-deep-os-debian-run-fedora-27e9",
        "er-deep-os-debian-run-mint-a924",
    ]
    assert variants.root.get_node("/run/os/fedora").value == {"ver": 39}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a:\n  !include : missing.yaml\n", "missing.yaml' included from"),
        ("a:\n  !using : x\n  !using : y\n", "!using can be used only once per node"),
        ("a: [\n", "invalid multiplex file"),
        ("a: !include : x\n", "Make sure !tags and colons are separated by a space"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_broken_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MuxError, match=re.escape(message)):
        Variants.from_files([_write(tmp_path, text)])


def test_a_missing_file_is_a_mux_error(tmp_path: Path) -> None:
    with pytest.raises(MuxError, match="does not exist"):
        Variants.from_files([str(tmp_path / "nope.yaml")])


def test_verbosity_levels() -> None:
    assert [verbosity(x) for x in ("0", "brief", "MAX", "7")] == [0, 1, 99, 7]
    with pytest.raises(ValueError):
        verbosity("loud")


def test_multiply_orders_and_names() -> None:
    variants = Variants.from_files([str(DATA / "yaml_to_mux" / "simple_vars.yaml")])
    specs = [TestSpec(ref=f"t.py:T.{m}", kind="instrumented", path="t.py") for m in ("a", "b")]
    dumps = [v.dump() for v in variants]
    per_test = multiply(specs, dumps)
    assert [(s.ref[-1], s.variant["variant_id"][:9]) for s in per_test] == [
        ("a", "run-first"),
        ("a", "run-secon"),
        ("b", "run-first"),
        ("b", "run-secon"),
    ]
    per_variant = multiply(specs, dumps, "tests-per-variant")
    assert [s.ref[-1] for s in per_variant] == ["a", "b", "a", "b"]
    spec = per_test[1]
    spec.uid = 7
    assert spec.name.startswith("7-t.py:T.a;run-second-")
    assert spec.test_id.variant == spec.variant["variant_id"]
    assert TestSpec.from_dict(spec.to_dict()).variant == spec.variant  # JSON-able, kept


def _params(text: str, tmp_path: Path, data: dict | None = None, paths=None) -> list[Params]:
    variants = Variants.from_files([_write(tmp_path, text)], paths=paths)
    return [Params(data, v.dump()) for v in variants]


def test_params_get_looks_up_paths_as_avocado(tmp_path: Path) -> None:
    first, _ = _params(
        """
        by: !mux
            one:
                value: 1
            two:
                value: 2
        some:
            where:
                value: text
        key: top
        """,
        tmp_path,
    )
    assert first.get("value", "*/by/*") == 1
    assert first.get("value", path="/run/some/*") == "text"
    assert first.get("key") == "top"
    assert first.get("missing", default=5) == 5
    assert first.get("missing", 5) == 5  # mhtest's: a non-path second argument is the default
    with pytest.raises(ValueError, match="Multiple  leaves contain the key 'value'"):
        first.get("value")
    assert ("/run/by/one", "value", 1) in list(first.iteritems())
    assert first["key"] == "top" and "value" in first.to_dict()


def test_job_params_win_over_the_variant(tmp_path: Path) -> None:
    (params,) = _params("a: !mux\n    x:\n        size: 1\n", tmp_path, {"size": "9"})
    assert params.get("size") == "9"
    assert params.get("size", "/run/a/*") == "9"
    assert params["size"] == "9"


def test_mux_paths_order_the_lookup(tmp_path: Path) -> None:
    text = "hw:\n    size: 1\nsw:\n    size: 2\n"
    (params,) = _params(text, tmp_path, paths=["/run/sw/*", "/run/*"])
    assert params.get("size") == 2
    # A leaf outside every mux path is found only through an absolute path.
    (params,) = _params(text, tmp_path, paths=["/run/hw/*"])
    assert params.get("size") == 1
    assert params.get("size", "/run/sw/*") == 2
    assert params.get("size", "*/sw/*") is None


def test_a_simple_test_gets_its_first_leafs_values(tmp_path: Path) -> None:
    variants = Variants.from_files([_write(tmp_path, "a:\n    x: 1\nb:\n    y: 2\n")])
    (variant,) = variants
    assert variant_values(variant.dump()) == {"x": 1}
    assert variant_values(None) == {}


def test_a_run_without_variants_does_not_load_them(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text(
        "from mhtest import Test\n\nclass T(Test):\n    def test(self):\n        pass\n"
    )
    code = (
        "import sys\nfrom mhtest.cli import main\n"
        "code = main(['run', 't.py', '--job-results-dir', 'out'])\n"
        "assert code == 0, code\n"
        "loaded = [m for m in ('mhtest.mux', 'mhtest.variants') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_secret_values_of_a_variant_stay_out_of_files(tmp_path: Path) -> None:
    (variant,) = Variants.from_files([_write(tmp_path, "db:\n    db_password: s3\n    n: 1\n")])
    spec = TestSpec(ref="t.py:T.a", kind="instrumented", path="t.py", variant=variant.dump())
    written = spec.masked_dict()
    assert written is not None
    assert written["variant"]["variant"][0][1] == [
        ["/run/db", "db_password", "********"],
        ["/run/db", "n", 1],
    ]
    assert spec.variant["variant"][0][1][0][2] == "s3"  # the test itself still gets it
    plain = TestSpec(ref="t.py:T.a", kind="instrumented", path="t.py", variant={"variant": []})
    assert plain.masked_dict() is None
