"""send_file / get_file against a real sshd host, and the same rules for LocalHost."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mhtest.hosts import LocalHost, TransferError

pytestmark = pytest.mark.timeout(60)


def make_tree(root: Path) -> Path:
    """A small tree with modes worth keeping: an executable, a private dir, binary data."""
    (root / "sub" / "private").mkdir(parents=True)
    (root / "top.txt").write_text("top\n")
    script = root / "sub" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o751)
    (root / "sub" / "private").chmod(0o700)
    (root / "sub" / "private" / "blob.bin").write_bytes(bytes(range(256)) * 4000)
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*"))
    assert files_a == files_b
    for rel in files_a:
        assert mode(a / rel) == mode(b / rel), rel
        if (a / rel).is_file():
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(params=["ssh", "local"])
def any_host(request, tmp_path):
    """An SSHHost on a real sshd host, or LocalHost: both must follow the same rules."""
    if request.param == "local":
        with LocalHost() as host:
            yield host
    else:
        info = request.getfixturevalue("sshd_host")
        with info.make_host() as host:
            yield host


def test_file_round_trip_keeps_bytes_and_mode(any_host, tmp_path: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(os.urandom(300_000))
    src.chmod(0o750)
    remote = any_host.get_tmp_dir()
    any_host.send_file(str(src), remote + "/renamed")
    assert any_host.run("stat -c %a", args=[remote + "/renamed"]).stdout.strip() == "750"
    back = tmp_path / "back"
    any_host.get_file(remote + "/renamed", str(back))
    assert back.read_bytes() == src.read_bytes()
    assert mode(back) == 0o750


def test_file_into_existing_directory_keeps_its_name(any_host, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("hello\n")
    remote = any_host.get_tmp_dir()
    any_host.send_file(str(src), remote)
    assert any_host.run("cat", args=[remote + "/notes.txt"]).stdout == "hello\n"
    local_dir = tmp_path / "into"
    local_dir.mkdir()
    any_host.get_file(remote + "/notes.txt", str(local_dir))
    assert (local_dir / "notes.txt").read_text() == "hello\n"


def test_directory_semantics_and_trailing_slash(any_host, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    remote = any_host.get_tmp_dir()
    # new destination: becomes a copy of the tree
    any_host.send_file(str(tree), remote + "/copy")
    # existing destination: the tree goes inside it
    any_host.send_file(str(tree), remote)
    # trailing slash: the contents go into the destination
    any_host.send_file(str(tree) + "/", remote + "/contents")
    listing = any_host.run("cd " + remote + " && find . | sort").stdout.split()
    assert "./copy/sub/run.sh" in listing
    assert "./tree/sub/private/blob.bin" in listing
    assert "./contents/top.txt" in listing and "./contents/tree" not in listing

    back = tmp_path / "back"
    any_host.get_file(remote + "/copy", str(back))
    assert_same_tree(tree, back)
    existing = tmp_path / "existing"
    existing.mkdir()
    any_host.get_file(remote + "/copy", str(existing))
    assert_same_tree(tree, existing / "copy")
    flat = tmp_path / "flat"
    any_host.get_file(remote + "/copy/", str(flat))
    assert_same_tree(tree, flat)


def test_several_sources_go_into_a_directory(any_host, tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("A")
    b.write_text("B")
    remote = any_host.get_tmp_dir() + "/many"
    any_host.send_file([str(a), str(b)], remote)
    assert any_host.run("cat", args=[remote + "/a.txt", remote + "/b.txt"]).stdout == "AB"


def test_missing_sources_are_clear_errors(any_host, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no such"):
        any_host.send_file(str(tmp_path / "absent"), "/tmp")
    with pytest.raises(TransferError, match="no such file"):
        any_host.get_file("/nonexistent/mhtest-file", str(tmp_path / "x"))
