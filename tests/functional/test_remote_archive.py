"""The tar streams of the remote runner: test files out (mhtest.runners.payload), results back
(mhtest.runners.executor).

Both directions go through `unpack`, which must never write outside its target, whatever
a host (or a test on it) put in the archive.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from mhtest.runners import payload
from mhtest.runners.executor import pack_results
from mhtest.runners.payload import unpack
from mhtest.spec import TestSpec


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("python_filter", [True, False], ids=["data_filter", "older-python"])
def test_unpack_refuses_paths_and_links_leading_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python_filter: bool
) -> None:
    if not python_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _member(tar, "ok/debug.log", b"fine")
        _member(tar, "../escaped", b"bad")
        _member(tar, "/tmp/absolute-escape", b"bad")
        _member(tar, "ok/link", type=tarfile.SYMTYPE, linkname="../../outside")
        _member(tar, "ok/dev", type=tarfile.CHRTYPE)
    target = tmp_path / "target"
    refused = unpack(buf.getvalue(), str(target))
    assert (target / "ok" / "debug.log").read_bytes() == b"fine"
    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/absolute-escape").exists()
    assert not (target / "ok" / "link").is_symlink()
    assert not (target / "ok" / "dev").exists()
    # an absolute name is refused, or (Python's data filter) kept inside the target
    assert set(refused) - {"/tmp/absolute-escape"} == {"../escaped", "ok/link", "ok/dev"}


def test_test_files_round_trip_with_modes_and_without_caches(tmp_path: Path) -> None:
    src = tmp_path / "suite"
    (src / "__pycache__").mkdir(parents=True)
    (src / "__pycache__" / "t.cpython-311.pyc").write_bytes(b"cache")
    (src / "check.sh").write_text("#!/bin/sh\ntrue\n")
    (src / "check.sh").chmod(0o755)
    (src / "check.sh.data").mkdir()
    (src / "check.sh.data" / "input.txt").write_text("data")
    spec = TestSpec(ref="check.sh", kind="simple", path=str(src / "check.sh"), uid=3, host="h")
    files = payload.build([spec.path])
    (remote,) = files.remote_specs([spec])
    assert remote.path == "t0/check.sh" and remote.logdir == "results/3-check.sh@h"
    stream = b"".join(files.blocks())
    assert len(stream) == files.size
    out = tmp_path / "host"
    assert unpack(stream, str(out)) == []
    assert os.access(out / "t0" / "check.sh", os.X_OK)
    assert (out / "t0" / "check.sh.data" / "input.txt").read_text() == "data"
    assert not (out / "t0" / "__pycache__").exists()
    # the same files, the same key; a changed byte, another
    assert payload.build([spec.path]).key == files.key
    (src / "check.sh.data" / "input.txt").write_text("date")
    assert payload.build([spec.path]).key != files.key
    # and back: a results directory
    results = tmp_path / "results"
    (results / "data").mkdir(parents=True)
    (results / "debug.log").write_text("log")
    back = tmp_path / "back"
    packed = io.BytesIO()
    pack_results(str(results), packed)
    unpack(packed.getvalue(), str(back))
    assert (back / "debug.log").read_text() == "log" and (back / "data").is_dir()
