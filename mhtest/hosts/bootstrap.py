"""Make mhtest runnable on a host that has only python3 and no package registry.

Two things are cached on the host, under ``~/.cache/mhtest`` (``remote_cache``):

- ``env-<deps key>-<python version>-<machine>``: a virtual environment with mhtest's
  dependencies, keyed by mhtest's version and dependency set. It is filled from wheels that the
  controller builds (or downloads) once into its own cache (``~/.cache/mhtest/wheelhouse-...``,
  or ``$MHTEST_CACHE_DIR``) and sends over SSH; the host runs ``pip install --no-index
  --find-links`` with a pip taken from that wheelhouse, so it needs neither ensurepip nor a
  registry.
- ``src-<source hash>``: mhtest's own code (the ``mhtest/`` package plus a dist-info with its
  entry points, so stevedore finds the plugins), put on PYTHONPATH. Editing mhtest changes only
  this hash: the dependency environment is not rebuilt.

The warm path (both present) is a single SSH command that checks the markers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from mhtest.hosts.errors import CmdError, HostError

log = logging.getLogger(__name__)

REMOTE_CACHE = "~/.cache/mhtest"
READY = ".mhtest-ready"
#: Sources on a host that no run started for this many days are removed.
STALE_DAYS = 7
MIN_PYTHON = (3, 9)
#: Changes when what goes into a host's environment changes, so that hosts build a new one
#: (2: the environment's scripts, aexpect_helper among them, name its own python).
ENV_LAYOUT = 2
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../mhtest


@dataclass
class RemoteEnv:
    """How to run mhtest on a host: ``<python> -m mhtest ...`` with `env` set."""

    python: str
    env: dict[str, str] = field(default_factory=dict)
    cold: bool = False  # True when something had to be installed this time


def controller_cache() -> Path:
    """The controller's cache directory (``$MHTEST_CACHE_DIR`` or ~/.cache/mhtest)."""
    return Path(os.environ.get("MHTEST_CACHE_DIR") or os.path.expanduser("~/.cache/mhtest"))


def requirements() -> list[str]:
    """mhtest's runtime requirements (no extras), from its installed metadata."""
    reqs = metadata.requires("mhtest") or []
    return sorted(r for r in reqs if "extra ==" not in r)


def _mhtest_version() -> str:
    from mhtest import __version__

    return __version__


def deps_key() -> str:
    """Key of the dependency environment: mhtest's version, dependency set and ENV_LAYOUT."""
    text = "\n".join([_mhtest_version(), f"layout {ENV_LAYOUT}", *requirements()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry_points() -> str:
    try:
        return metadata.distribution("mhtest").read_text("entry_points.txt") or ""
    except metadata.PackageNotFoundError:
        return ""


def source_archive() -> tuple[str, bytes]:
    """(hash, tar.gz bytes) of mhtest's sources plus a dist-info carrying its entry points."""
    files = sorted(
        p
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
    digest = hashlib.sha256()
    payload: list[tuple[str, bytes, int]] = []
    for path in files:
        rel = "mhtest/" + path.relative_to(PACKAGE_DIR).as_posix()
        data = path.read_bytes()
        digest.update(rel.encode() + b"\0" + data + b"\0")
        payload.append((rel, data, path.stat().st_mode & 0o777))
    version = _mhtest_version()
    info = f"mhtest-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: mhtest\nVersion: {version}\n".encode()
    entry_points = _entry_points().encode()
    digest.update(entry_points)
    payload += [
        (f"{info}/METADATA", meta, 0o644),
        (f"{info}/entry_points.txt", entry_points, 0o644),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, data, mode in payload:
            member = tarfile.TarInfo(name)
            member.size, member.mode, member.mtime = len(data), mode, 0
            tar.addfile(member, io.BytesIO(data))
    return digest.hexdigest()[:16], buf.getvalue()


def _remote_path(path: str) -> str:
    """`path` for a remote shell: ~ expands to $HOME, the rest is quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def ensure_mhtest(
    host: Any,
    python: str = "python3",
    timeout: float = 900,
    remote_cache: str = REMOTE_CACHE,
) -> RemoteEnv:
    """Make sure mhtest and its dependencies are on `host`; how to run it there.

    Raises HostError (one line) when the host has no usable Python or its disk is full.
    """
    from mhtest.hosts.local import LocalHost

    if isinstance(host, LocalHost):
        pythonpath = os.pathsep.join(
            p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH", "")) if p
        )
        return RemoteEnv(python=sys.executable, env={"PYTHONPATH": pythonpath})
    started = time.monotonic()
    src_key, archive = source_archive()
    script = probe_script(python, deps_key(), src_key, remote_cache)
    probe = parse_probe(host, python, host.run(script, timeout=60).stdout)
    cold = complete(host, probe, archive, remote_cache, timeout)
    log.info(
        "%s: mhtest ready (%s, %.2f s)",
        host.name,
        "installed" if cold else "cached",
        time.monotonic() - started,
    )
    return remote_env(probe, cold)


def complete(host: Any, probe: dict[str, Any], archive: bytes, cache: str, timeout: float) -> bool:
    """Install what `probe` (see parse_probe) found missing; True if anything was installed."""
    cold = False
    if not probe["env_ok"]:
        cold = True
        _install_env(host, probe, deps_key(), cache, timeout)
    if not probe["src_ok"]:
        cold = True
        _install_source(host, probe["src"], archive, timeout, cache)
    return cold


def remote_env(probe: dict[str, Any], cold: bool = False) -> RemoteEnv:
    """How to run mhtest in the environment `probe` found."""
    return RemoteEnv(
        python=probe["env"] + "/bin/python", env={"PYTHONPATH": probe["src"]}, cold=cold
    )


# The interpreter's version and machine are remembered next to the environments (`hint`):
# asking the interpreter costs a Python start (more behind a pyenv shim) on every run.
# The hint is used while `command -v` finds the same path, that file (symlinks followed)
# is not newer than the hint, and it leads to a ready environment; otherwise the
# interpreter is asked. (A python3 that changes version behind an unchanged file, like a
# pyenv shim after `pyenv global`, keeps the environment it had while that still exists.)
_PROBE = r"""
py=$(command -v {python} 2>/dev/null) || {{ echo "NOPYTHON"; exit 0; }}
cache={cache}
hint="$cache/python-{python_key}"
code='import sys, platform; print("%d.%d" % sys.version_info[:2], platform.machine())'
info=
fresh=
if [ -f "$hint" ] && [ ! "$py" -nt "$hint" ]; then
  read -r hpy info < "$hint" || info=
  [ "$hpy" = "$py" ] || info=
fi
for attempt in hint asked; do
  if [ -z "$info" ]; then
    info=$("$py" -S -c "$code" 2>&1) || {{ echo "BADPYTHON $info"; exit 0; }}
    fresh=1
  fi
  set -- $info
  env="$cache/env-{key}-$1-$2"
  envok=1
  [ -f "$env/{ready}" ] && [ -x "$env/bin/python" ] || envok=0
  if [ "$envok" = 1 ] || [ -n "$fresh" ]; then break; fi
  info=
done
src="$cache/src-{src_key}"
echo "PY $py $1 $2"
echo "ENV $env"
echo "SRC $src"
ok=$envok
[ "$envok" = 1 ] && echo ENVOK
[ -f "$src/{ready}" ] && echo SRCOK || ok=0
if [ "$ok" = 1 ] && [ -n "$fresh" ]; then
  {{ printf '%s %s %s\n' "$py" "$1" "$2" > "$hint.$$" && mv -f "$hint.$$" "$hint"; }} 2>/dev/null
fi
{then}
exit 0
"""


def probe_script(python: str, key: str, src_key: str, cache: str, then: str = "") -> str:
    """Shell text that finds `python` and checks the cached environment (see parse_probe).

    `then` runs after the checks with $py, $env and $src set, and $ok=1 when both the
    environment and the sources are ready (the remote runner starts mhtest there at once).
    """
    return _PROBE.format(
        python=shlex.quote(python),
        python_key=hashlib.sha256(python.encode()).hexdigest()[:12],
        cache=_remote_path(cache),
        key=key,
        src_key=src_key,
        ready=READY,
        then=then,
    )


def parse_probe(host: Any, python: str, out: str) -> dict[str, Any]:
    """What probe_script printed → python, version, machine, env, src, env_ok, src_ok.

    Raises HostError (one line) when the host has no usable Python.
    """
    lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in out.splitlines())
    if "NOPYTHON" in lines:
        raise HostError(
            f"{host.name}: {python} not found on the host; install Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ there or choose one with --remote-python",
            host.name,
        )
    if "BADPYTHON" in lines or "PY" not in lines:
        raise HostError(f"{host.name}: {python} does not run: {out.strip()[:200]}", host.name)
    path, version, machine = lines["PY"].split()
    if tuple(int(x) for x in version.split(".")) < MIN_PYTHON:
        raise HostError(
            f"{host.name}: {path} is Python {version}; mhtest needs "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ (choose another with --remote-python)",
            host.name,
        )
    return {
        "python": path,
        "version": version,
        "machine": machine,
        "env": lines["ENV"],
        "src": lines["SRC"],
        "env_ok": "ENVOK" in lines,
        "src_ok": "SRCOK" in lines,
    }


def _disk_full(host: Any, what: str, cache: str) -> HostError:
    return HostError(
        f"{host.name}: disk full while {what} (No space left on device); free some space "
        f"in the filesystem of {cache} on the host",
        host.name,
    )


def _check_disk(host: Any, exc: CmdError, what: str, cache: str) -> None:
    text = exc.result.stderr + exc.result.stdout
    if "No space left on device" in text or "Disk quota exceeded" in text:
        raise _disk_full(host, what, cache) from None
    tail = " | ".join(text.strip().splitlines()[-3:])
    raise HostError(f"{host.name}: {what} failed: {tail}", host.name) from None


def _install_source(host: Any, src: str, archive: bytes, timeout: float, cache: str) -> None:
    script = (
        f'src={shlex.quote(src)}; tmp="$src.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp" && '
        f'tar -x -z -f - -C "$tmp" && touch "$tmp/{READY}" && '
        f'{{ mv -T "$tmp" "$src" 2>/dev/null || rm -rf "$tmp"; }}; test -f "$src/{READY}" && '
        # Sources of other mhtest versions nobody started for a week go (the executor
        # marks its sources used at each start): a host's cache does not grow forever.
        f'{{ find "$(dirname "$src")" -mindepth 2 -maxdepth 2 -path "*/src-*/{READY}" '
        f"-mtime +{STALE_DAYS} 2>/dev/null | while read -r m; do "
        f'[ "${{m%/*}}" = "$src" ] || rm -rf "${{m%/*}}"; done; true; }}'
    )
    try:
        host.run(script, stdin=archive, timeout=timeout)
    except CmdError as exc:
        _check_disk(host, exc, "unpacking mhtest's sources", cache)


def wheelhouse(version: str, machine: str, timeout: float = 900) -> Path:
    """The controller's wheel directory for a host Python `version`/`machine` (built once)."""
    key = deps_key()
    target = controller_cache() / f"wheelhouse-{key}-{version}-{machine}"
    if (target / READY).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (hosts set up in parallel threads, or jobs side by side): the
    # others wait for it and use what it built.
    with _exclusive(target.parent / f".{target.name}.lock", timeout):
        if (target / READY).exists():
            return target
        return _build_wheelhouse(target, version, machine, timeout)


@contextlib.contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (threads and processes alike); HostError past `timeout`."""
    import fcntl

    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostError(
                        f"controller: another mhtest kept {path} locked for {timeout:g} s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_wheelhouse(target: Path, version: str, machine: str, timeout: float) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp.", dir=target.parent))
    local = f"{sys.version_info[0]}.{sys.version_info[1]}"
    import platform

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if version == local and machine == platform.machine():
        commands = [[*pip, "wheel", "--wheel-dir", str(tmp), "pip", *requirements()]]
    else:
        # Another interpreter: binary wheels only, for its version and platform.
        commands = [
            [
                *pip,
                "download",
                "--dest",
                str(tmp),
                "--only-binary=:all:",
                "--python-version",
                version,
                "--implementation",
                "cp",
                "--platform",
                f"manylinux2014_{machine}",
                "--platform",
                f"manylinux_2_28_{machine}",
                "--platform",
                f"linux_{machine}",
                "pip",
                *requirements(),
            ]
        ]
    log.info("building the wheelhouse for Python %s/%s in %s", version, machine, target)
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise HostError(f"controller: building wheels for Python {version} failed: {tail}")
    (tmp / READY).touch()
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return target


# pip writes into the scripts it installs (aexpect_helper, that aexpect starts each session
# with, and others) the path of the interpreter it runs with: the temporary directory's, which
# is renamed at the end. This points them at the environment's final path.
_RETARGET_SCRIPTS = """
import os, sys
old, new = (path.encode() for path in sys.argv[1:])
for entry in os.scandir(os.path.join(sys.argv[1], "bin")):
    if entry.is_file(follow_symlinks=False):
        with open(entry.path, "rb") as f:
            text = f.read()
        if old in text and b"\\0" not in text:
            with open(entry.path, "wb") as f:
                f.write(text.replace(old, new))
"""

_INSTALL = """
set -e
env={env}; wh={wh}
tmp="$env.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp" "$wh"' EXIT
{python} -m venv --without-pip "$tmp"
pipwhl=$(ls "$wh"/pip-*.whl | head -n 1)
"$tmp/bin/python" "$pipwhl/pip" install -q --no-index --disable-pip-version-check \
    --find-links "$wh" {reqs}
"$tmp/bin/python" -c {retarget} "$tmp" "$env"
touch "$tmp/{ready}"
mv -T "$tmp" "$env" 2>/dev/null || test -f "$env/{ready}"
"""


def _install_env(host: Any, probe: dict[str, Any], key: str, cache: str, timeout: float) -> None:
    wheels = wheelhouse(probe["version"], probe["machine"], timeout=timeout)
    remote_wh = f"{probe['env']}.wheels.{os.getpid()}.{time.monotonic_ns()}"
    try:
        host.run("mkdir -p --", args=[remote_wh], timeout=60)
        host.send_file(str(wheels) + "/", remote_wh, timeout=timeout)
    except CmdError as exc:
        _check_disk(host, exc, "sending mhtest's wheels", cache)
    except HostError as exc:
        if "No space left" in str(exc):
            raise _disk_full(host, "sending mhtest's wheels", cache) from None
        raise
    script = _INSTALL.format(
        env=shlex.quote(probe["env"]),
        wh=shlex.quote(remote_wh),
        python=shlex.quote(probe["python"]),
        reqs=" ".join(shlex.quote(r) for r in requirements()),
        retarget=shlex.quote(_RETARGET_SCRIPTS),
        ready=READY,
    )
    try:
        host.run(script, timeout=timeout)
    except CmdError as exc:
        _check_disk(host, exc, "installing mhtest's dependencies", cache)
