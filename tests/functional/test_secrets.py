"""Secrets in params and inventories: the test gets them, no file of the results holds them.

Runs here and on a real sshd host (whose results come back), through the real CLI.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mhtest.secrets import MASK, looks_secret, masked

pytestmark = pytest.mark.timeout(90)

SECRET_PY = """
from mhtest import Test


class UsesSecrets(Test):
    def test(self):
        got = (self.params.get("db_password"), self.params.get("site_key"))
        assert got == ("hunter2-XYZ", "abc-SITE-777"), "the test did not get the real values"
        self.whiteboard = "got them"
"""

INVENTORY = """
all:
  vars:
    mhtest_secrets: [site_key]
    site_key: abc-SITE-777
  hosts:
    here: {{ansible_connection: local}}
    there:
      ansible_host: {info.address}
      ansible_port: {info.port}
      ansible_user: {info.user}
      ansible_ssh_private_key_file: {info.key_file}
"""


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and any(n in path.read_bytes() for n in needles):
            found.append(str(path.relative_to(root)))
    return found


def test_secret_params_reach_the_test_and_no_results_file(
    mhtest, write_tests, warm_hosts, tmp_path
) -> None:
    (info,) = warm_hosts(1)
    tests = write_tests({"secret.py": SECRET_PY})
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(INVENTORY.format(info=info))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(Path(info.known_hosts).read_text())
    env = {"HOME": str(home), "MHTEST_CACHE_DIR": str(Path("~/.cache/mhtest").expanduser())}
    run = mhtest(
        "run", str(tests / "secret.py"), "--inventory", str(inventory),
        "-p", "db_password=hunter2-XYZ", env=env,
    )  # fmt: skip
    assert run.code == 0, run
    assert sorted(r["host"] for r in run.results()["tests"]) == ["here", "there"]
    assert {r["whiteboard"] for r in run.results()["tests"]} == {"got them"}
    assert files_holding(run.job_dir, [b"hunter2-XYZ", b"abc-SITE-777"]) == []
    specs = list(run.job_dir.rglob("spec.json"))
    assert len(specs) == 2
    for spec in specs:
        assert MASK in spec.read_text()
        assert stat.S_IMODE(spec.stat().st_mode) == 0o600
    assert stat.S_IMODE(run.job_dir.stat().st_mode) == 0o700
    for logdir in (run.job_dir / "test-results").iterdir():
        assert stat.S_IMODE(logdir.stat().st_mode) == 0o700


def test_a_login_password_in_the_inventory_is_refused_in_one_line(mhtest, tmp_path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1, ansible_ssh_pass: x}\n")
    test = Path(__file__).resolve().parents[2] / "examples" / "tests" / "passtest.py"
    run = mhtest("run", str(test), "--inventory", str(inventory))
    assert run.code == 2, run
    (line,) = [ln for ln in run.stderr.splitlines() if not ln.startswith("mhtest: warning")]
    assert "ansible_ssh_pass is not supported" in line and "ssh-copy-id" in line
    assert str(inventory) in line


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("db_password", True),
        ("PASSWORD", True),
        ("api_key", True),
        ("apikey", True),
        ("github_token", True),
        ("client_secret", True),
        ("ssh_private_key", True),
        ("admin_pw", True),
        ("passphrase", True),
        ("pass_count", False),
        ("tokens_per_second", False),
        ("author", False),
        ("size", False),
        ("compass", False),
    ],
)
def test_which_names_look_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_masked_keeps_the_rest() -> None:
    assert masked({"db_password": "x", "size": 4, "zone": "a"}, ["zone"]) == {
        "db_password": MASK,
        "size": 4,
        "zone": MASK,
    }
