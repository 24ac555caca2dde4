"""File transfer for SSHHost: streams over an exec channel (`cat` for files, `tar` for trees).

One channel per source, no SFTP round trips: the data moves at the speed of the SSH cipher.
Semantics follow scp/rsync:

- a file goes to `dest`, or into `dest/` when `dest` is an existing directory;
- a directory `src` becomes `dest` (or `dest/<name of src>` when `dest` already exists);
- a directory written with a trailing slash, `src/`, copies its *contents* into `dest`;
- several sources need `dest` to be a directory (it is created).

Permissions are kept (files: their mode; trees: tar -p).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mhtest.hosts.connection import Connection
from mhtest.hosts.errors import TransferError

log = logging.getLogger(__name__)

BLOCK = 1 << 20


def _copy(read: Callable[[int], bytes], write: Callable[[bytes], Any]) -> None:
    """Move blocks from `read` to `write` until `read` returns nothing."""
    while True:
        block = read(BLOCK)
        if not block:
            return
        write(block)


STATUS_WAIT = 120.0


def _sources(source: str | Sequence[str]) -> list[str]:
    return [source] if isinstance(source, (str, os.PathLike)) else [str(s) for s in source]


def _finish(host: Connection, chan: Any, what: str, stderr: bytes = b"") -> None:
    # The exit status follows the data at once; bound the wait all the same.
    if not chan.status_event.wait(STATUS_WAIT):
        chan.close()
        raise TransferError(f"{host.name}: {what}: no exit status from the host", host.name)
    status = chan.recv_exit_status()
    while chan.recv_stderr_ready():
        stderr += chan.recv_stderr(65536)
    chan.close()
    if status != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        # tar's last line is a generic "Exiting with failure status"; the cause comes first.
        lines = [line for line in lines if "Exiting with failure status" not in line]
        reason = " | ".join(lines[:2]) if lines else f"exit status {status}"
        raise TransferError(f"{host.name}: {what} failed: {reason}", host.name)


def send(
    host: Connection, source: str | Sequence[str], dest: str, timeout: float | None = None
) -> None:
    """Copy local file(s)/directories to `dest` on `host`."""
    sources = _sources(source)
    if len(sources) > 1:
        host.run("mkdir -p --", args=[dest], timeout=timeout)
    for src in sources:
        if not os.path.exists(src):
            raise TransferError(f"{host.name}: cannot send {src}: no such local file", host.name)
        if os.path.isdir(src):
            _send_tree(host, src, dest, timeout)
        else:
            _send_one_file(host, src, dest, timeout)


def _send_one_file(host: Connection, src: str, dest: str, timeout: float | None) -> None:
    mode = os.stat(src).st_mode & 0o7777
    qd, qb = shlex.quote(dest), shlex.quote(os.path.basename(src))
    script = f'd={qd}; if [ -d "$d" ]; then d="$d"/{qb}; fi; cat > "$d" && chmod {mode:o} "$d"'
    chan = host.open_channel()
    chan.settimeout(timeout)
    chan.exec_command(script)
    try:
        with open(src, "rb") as f:
            _copy(f.read, chan.sendall)
        chan.shutdown_write()
    except OSError as exc:
        chan.close()
        raise TransferError(
            f"{host.name}: sending {src} to {dest} failed: {exc}", host.name
        ) from None
    _finish(host, chan, f"sending {src} to {dest}")


def _send_tree(host: Connection, src: str, dest: str, timeout: float | None) -> None:
    qd = shlex.quote(dest.rstrip("/") or "/")
    if src.endswith("/"):
        target = f"d={qd}"
    else:
        base = shlex.quote(os.path.basename(os.path.normpath(src)))
        target = f'd={qd}; if [ -d "$d" ]; then d="$d"/{base}; fi'
    script = f'{target}; mkdir -p "$d" && tar -x -p -f - -C "$d"'
    chan = host.open_channel()
    chan.settimeout(timeout)
    chan.exec_command(script)
    with subprocess.Popen(
        ["tar", "-c", "-f", "-", "-C", src, "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as tar:
        try:
            assert tar.stdout is not None
            _copy(tar.stdout.read1, chan.sendall)
            chan.shutdown_write()
        except OSError as exc:
            tar.kill()
            chan.close()
            raise TransferError(f"{host.name}: sending {src} failed: {exc}", host.name) from None
        tar_err = tar.stderr.read() if tar.stderr else b""
        if tar.wait() != 0:
            chan.close()
            raise TransferError(
                f"{host.name}: local tar of {src} failed: {tar_err.decode(errors='replace')}",
                host.name,
            )
    _finish(host, chan, f"sending {src} to {dest}")


def get(
    host: Connection, source: str | Sequence[str], dest: str, timeout: float | None = None
) -> None:
    """Copy file(s)/directories from `host` to local `dest`."""
    sources = _sources(source)
    if len(sources) > 1:
        os.makedirs(dest, exist_ok=True)
    for src in sources:
        _get_one(host, src, dest, timeout)


def _read_header(host: Connection, chan: Any, src: str) -> tuple[str, bytes]:
    data = b""
    while b"\n" not in data:
        chunk = chan.recv(4096)
        if not chunk:
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            reason = err.decode("utf-8", "replace").strip() or "no answer"
            chan.close()
            raise TransferError(f"{host.name}: cannot get {src}: {reason}", host.name)
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line.decode("utf-8", "replace"), rest


def _get_one(host: Connection, src: str, dest: str, timeout: float | None) -> None:
    qs = shlex.quote(src)
    script = (
        f's={qs}; if [ -d "$s" ]; then echo D; exec tar -c -f - -C "$s" .; '
        f'elif [ -r "$s" ] && [ ! -d "$s" ]; then echo F $(stat -c %a "$s" 2>/dev/null); '
        f'exec cat "$s"; else echo "no such file or not readable: $s" >&2; exit 1; fi'
    )
    chan = host.open_channel()
    chan.settimeout(timeout)
    chan.exec_command(script)
    try:
        kind, rest = _read_header(host, chan, src)
    except OSError as exc:  # a timeout while waiting for the host
        chan.close()
        raise TransferError(f"{host.name}: getting {src} failed: {exc}", host.name) from None
    name = os.path.basename(os.path.normpath(src))
    if kind == "D":
        if src.endswith("/"):
            target = dest
        else:
            target = os.path.join(dest, name) if os.path.isdir(dest) else dest
        os.makedirs(target, exist_ok=True)
        _receive_tree(host, chan, rest, src, target)
    else:
        target = os.path.join(dest, name) if os.path.isdir(dest) else dest
        _receive_file(host, chan, rest, src, target, kind)
    _finish(host, chan, f"getting {src}")


def _receive_file(
    host: Connection, chan: Any, first: bytes, src: str, target: str, header: str
) -> None:
    try:
        with open(target, "wb") as out:
            if first:
                out.write(first)
            _copy(chan.recv, out.write)
    except OSError as exc:
        chan.close()
        raise TransferError(
            f"{host.name}: getting {src} into {target} failed: {exc}", host.name
        ) from None
    parts = header.split()
    if len(parts) == 2:
        try:
            os.chmod(target, int(parts[1], 8))
        except ValueError:
            log.debug("%s: no mode for %s in %r", host.name, src, header)


def _receive_tree(host: Connection, chan: Any, first: bytes, src: str, target: str) -> None:
    tar_bin = shutil.which("tar") or "tar"
    with subprocess.Popen(
        [tar_bin, "-x", "-p", "-f", "-", "-C", target],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as tar:
        assert tar.stdin is not None
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(tar.stderr.read()), daemon=True)
        reader.start()
        try:
            if first:
                tar.stdin.write(first)
            _copy(chan.recv, tar.stdin.write)
            tar.stdin.close()
        except OSError as exc:
            tar.kill()
            chan.close()
            raise TransferError(f"{host.name}: getting {src} failed: {exc}", host.name) from None
        status = tar.wait()
        reader.join(timeout=5)
    if status != 0:
        msg = b"".join(errors).decode("utf-8", "replace").strip()
        raise TransferError(f"{host.name}: unpacking {src} into {target} failed: {msg}", host.name)
