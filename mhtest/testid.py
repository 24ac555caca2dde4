"""A test's ID in Avocado's shape (kept apart from mhtest.spec: a test imports it, and
must not pay for dataclasses)."""

from __future__ import annotations

from typing import Any


class TestID(str):
    """A test's ID in Avocado's shape, `UID-NAME[;VARIANT]`, that also keeps its parts.

    A str (results, logs and files use it as one), with Avocado's TestID attributes:
    `uid`, `name`, `variant`, `str_uid`, `str_variant`, `str_filesystem`.
    """

    __test__ = False  # not a pytest test class

    uid: Any
    name: str
    variant: str | None

    def __new__(cls, uid: Any, name: str, variant: str | None = None) -> TestID:
        text = f"{uid}-{name}" + (f";{variant}" if variant else "")
        self = super().__new__(cls, text)
        self.uid, self.name, self.variant = uid, name, variant or None
        return self

    def __getnewargs__(self) -> tuple[Any, str, str | None]:  # copy and pickle
        return self.uid, self.name, self.variant

    @property
    def str_uid(self) -> str:
        return str(self.uid)

    @property
    def str_variant(self) -> str:
        return f";{self.variant}" if self.variant else ""

    @property
    def str_filesystem(self) -> str:
        """The ID made safe as one directory name (mhtest.spec.dir_name)."""
        from mhtest.spec import dir_name

        return dir_name(self)
