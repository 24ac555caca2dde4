"""Results archives and events from a host are data: checked, bounded, written only inside.

Each archive here is what a hostile or broken host could send; the extractor must write
nothing outside the test's directory, follow no link and stop at the size limit.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from mhtest import events
from mhtest.runners import untrusted
from mhtest.runners.untrusted import ResultsSpool, extract, parse_size


def tar_of(*members: tuple) -> bytes:
    """A tar from (name, type, linkname_or_data) triples, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = None
            if kind == tarfile.REGTYPE:
                payload = extra if isinstance(extra, bytes) else extra.encode()
                info.size = len(payload)
                info.mode = 0o644
                data = io.BytesIO(payload)
            else:
                info.linkname = extra or ""
                info.mode = 0o755
            tar.addfile(info, data)
    return buf.getvalue()


def cve_2025_4517(up: int) -> bytes:
    """The symlink chain past PATH_MAX that leads tarfile's `data` filter outside.

    `escape` resolves `up` directories above the extraction root, while realpath()
    gives up on the over-long chain and sees it inside; `escape/planted` then lands there.
    """
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members, path = [], ""
    for step in steps:
        members.append((os.path.join(path, comp), tarfile.DIRTYPE, None))
        members.append((os.path.join(path, step), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append((linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps))))
    members.append(("escape", tarfile.SYMTYPE, linkpath + "/.." * up))
    members.append(("escape/planted", tarfile.REGTYPE, "written by the host"))
    return tar_of(*members)


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job directory with one test's results directory (the extraction target)."""
    (tmp_path / "job" / "test-results" / "1-t").mkdir(parents=True)
    return tmp_path / "job"


def everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_cve_2025_4517_chain_writes_nothing_outside(job: Path, tmp_path: Path) -> None:
    target = job / "test-results" / "1-t"
    before = everything(tmp_path)
    out = extract(io.BytesIO(cve_2025_4517(up=2)), str(target))
    # Links are never made, so `escape/planted` is a plain file inside, where it is harmless.
    assert list(tmp_path.rglob("planted")) == [target / "escape" / "planted"]
    assert not [p for p in target.rglob("*") if p.is_symlink()]
    assert everything(tmp_path) - before <= {
        str(p.relative_to(tmp_path)) for p in target.rglob("*")
    }
    assert "escape" in out.refused
    problem = out.problem(untrusted.MAX_RESULTS)
    assert "entries that are not plain files inside the test's directory" in problem


@pytest.mark.parametrize(
    "members",
    [
        [("../outside", tarfile.REGTYPE, "x")],
        [("a/../../outside", tarfile.REGTYPE, "x")],
        [("/tmp/absolute-from-host", tarfile.REGTYPE, "x")],
        [("link", tarfile.SYMTYPE, ".."), ("link/outside", tarfile.REGTYPE, "x")],
        [("link", tarfile.SYMTYPE, "/"), ("link/tmp/outside", tarfile.REGTYPE, "x")],
        [("hard", tarfile.LNKTYPE, "../outside"), ("hard", tarfile.REGTYPE, "x")],
        [("fifo", tarfile.FIFOTYPE, None), ("dev", tarfile.CHRTYPE, None)],
    ],
    ids=["dotdot", "inner-dotdot", "absolute", "symlink-up", "symlink-root", "hardlink", "dev"],
)
def test_names_and_kinds_that_lead_outside_are_refused(job: Path, members: list) -> None:
    target = job / "test-results" / "1-t"
    out = extract(io.BytesIO(tar_of(*members)), str(target))
    assert out.refused
    assert not (job / "test-results" / "outside").exists()
    assert not (job / "outside").exists()
    assert not Path("/tmp/absolute-from-host").exists()
    for path in target.rglob("*"):
        assert stat.S_ISREG(path.lstat().st_mode) or stat.S_ISDIR(path.lstat().st_mode)


def test_a_link_already_in_the_directory_is_not_followed(job: Path, tmp_path: Path) -> None:
    target = job / "test-results" / "1-t"
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (target / "debug.log").symlink_to(victim)
    (target / "data").symlink_to(tmp_path)
    out = extract(
        io.BytesIO(tar_of(("debug.log", tarfile.REGTYPE, "x"), ("data/y", tarfile.REGTYPE, "y"))),
        str(target),
    )
    assert victim.read_text() == "mine"
    assert not (tmp_path / "y").exists()
    assert sorted(out.refused) == ["data/y", "debug.log"]


def test_plain_results_arrive_with_private_modes(job: Path) -> None:
    target = job / "test-results" / "1-t"
    archive = tar_of(
        ("./", tarfile.DIRTYPE, None),
        ("./debug.log", tarfile.REGTYPE, "log line\n"),
        ("./data", tarfile.DIRTYPE, None),
        ("./data/deep/er/file.bin", tarfile.REGTYPE, b"\0" * 5000),
    )
    out = extract(io.BytesIO(archive), str(target))
    assert (out.files, out.size, out.refused, out.problem(1 << 20)) == (2, 5009, [], None)
    assert (target / "debug.log").read_text() == "log line\n"
    assert (target / "data/deep/er/file.bin").stat().st_size == 5000
    assert stat.S_IMODE((target / "debug.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "data/deep").stat().st_mode) == 0o700


def test_the_size_limit_stops_the_extraction_and_keeps_what_came_first(job: Path) -> None:
    target = job / "test-results" / "1-t"
    mib = b"x" * (1 << 20)
    archive = tar_of(*[(f"f{i}", tarfile.REGTYPE, mib) for i in range(4)])
    out = extract(io.BytesIO(archive), str(target), limit=int(2.5 * (1 << 20)))
    assert out.over_limit and out.files == 2
    assert sorted(p.name for p in target.iterdir()) == ["f0", "f1"]
    assert "over the 2.5 MiB limit" in out.problem(int(2.5 * (1 << 20)))


def test_the_spool_keeps_no_more_than_its_limit(job: Path) -> None:
    spool = ResultsSpool(str(job / "test-results"), limit=1 << 20)
    piece = b"y" * (1 << 20)
    for _ in range(80):  # 80 MiB from a host that does not stop
        spool.add(piece)
    assert spool.over
    assert spool._file.tell() <= (1 << 20) + untrusted.HEADER_ROOM
    spool.close()
    assert list((job / "test-results").iterdir()) == [job / "test-results" / "1-t"]


def test_a_truncated_archive_keeps_its_complete_files(job: Path) -> None:
    target = job / "test-results" / "1-t"
    archive = tar_of(("a", tarfile.REGTYPE, "a" * 1000), ("b", tarfile.REGTYPE, "b" * 9000))
    out = extract(io.BytesIO(archive[:4096]), str(target))
    assert (target / "a").read_text() == "a" * 1000
    assert out.broken and "broken" in out.problem(1 << 20)


def test_event_fields_from_a_host_are_cut_to_size() -> None:
    event = {
        "type": "test.end",
        "status": "PASS",
        "whiteboard": "w" * (5 << 20),
        "fail_reason": ["not", "a", "string"],
        "start": "yesterday",
        "children": [{"status": "WEIRD", "name": "n" * 10_000, "logdir": "/etc"}],
    }
    bounded = untrusted.bound_end(event, "h1")
    assert len(bounded["whiteboard"]) < (1 << 20) + 100
    assert isinstance(bounded["fail_reason"], str)
    assert "start" not in bounded
    (child,) = bounded["children"]
    assert child["status"] == "ERROR" and "logdir" not in child and len(child["name"]) <= 512
    assert untrusted.bound_end({"type": "test.end", "status": "OWNED"}, "h1")["status"] == "ERROR"


def test_a_line_without_end_does_not_grow_the_buffer() -> None:
    buffer = events.LineBuffer(limit=1000)
    for _ in range(100):
        assert buffer.feed(b"z" * 600) == []
    assert buffer._size <= 1000
    assert buffer.feed(b"tail\n{}\nnext") == [b"{}"]
    assert buffer.dropped == 1
    assert buffer.rest() == b"next"


@pytest.mark.parametrize(
    ("text", "size"), [("1G", 1 << 30), ("500M", 500 << 20), ("64k", 65536), ("12", 12)]
)
def test_sizes_are_read_as_users_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_says_what_a_size_looks_like() -> None:
    with pytest.raises(ValueError, match="examples: 500M"):
        parse_size("lots")


def test_a_hosts_nested_results_are_bounded_and_stay_inside() -> None:
    """A client control file's results from a host: status, texts, name and directory checked."""
    event = {
        "type": events.TEST_NESTED,
        "status": "OWNED",
        "name": "h1/" + "x" * 5000,
        "logdir": "../../outside",
        "fail_reason": "r" * 100_000,
        "start": "yesterday",
    }
    bounded = untrusted.bound_nested(event, "h1")
    assert bounded["status"] == "ERROR" and "unknown status" in bounded["fail_reason"]
    assert len(bounded["name"]) == untrusted.MAX_SHORT
    assert bounded["logdir"] == ""  # its parent's directory, never outside it
    assert "start" not in bounded
    fine = untrusted.bound_nested(
        {"type": events.TEST_NESTED, "status": "PASS", "name": "h1/t", "logdir": "h1/./t"}, "h1"
    )
    assert (fine["status"], fine["logdir"]) == ("PASS", "h1/t")
