"""CmdResult: everything about one finished command."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class CmdResult:
    """The outcome of a command run on a host.

    `exit_status` is the command's exit code (-1 when the host gave none, e.g. it was killed
    by a signal); `aborted` is the number of the signal that ended it, 0 if none.
    """

    command: str
    exit_status: int = 0
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    aborted: int = 0

    @property
    def ok(self) -> bool:
        """True when the command exited 0 and was not killed."""
        return self.exit_status == 0 and not self.aborted

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return asdict(self)

    def __str__(self) -> str:
        def block(text: str) -> str:
            text = text.rstrip("\n")
            return "\n" + "\n".join("    " + line for line in text.splitlines()) if text else ""

        return (
            f"* Command: {self.command}\n"
            f"Exit status: {self.exit_status}\n"
            f"Duration: {self.duration:.3f} s\n"
            f"Aborted: {self.aborted}\n"
            f"stdout:{block(self.stdout)}\n"
            f"stderr:{block(self.stderr)}"
        )
