"""mhtest: an Avocado-style test framework whose tests span several hosts."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "mhtest" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="mhtest",
    version=VERSION,
    description="Avocado-style tests, Autotest host control and multi-host tests",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["mhtest", "mhtest.*"]),
    package_data={"mhtest.report": ["templates/*"]},  # the page's stylesheet and script
    install_requires=[
        "paramiko>=3.0",
        "pyzmq>=24",
        "stevedore>=5.0",
        "aexpect>=1.6",
        "PyYAML>=5.4",
        "rich>=12",
        "qemu.qmp>=0.0.3",
        "watchdog>=2.1",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6",
            "lxml>=4.9",
            "ruff",
            "aiosmtpd>=1.4",
        ],
    },
    entry_points={
        "console_scripts": ["mhtest = mhtest.cli:main"],
        "mhtest.cli": [
            "run = mhtest.plugins.cli_run:RunCommand",
            "list = mhtest.plugins.cli_list:ListCommand",
            "sync-server = mhtest.plugins.cli_sync:SyncServerCommand",
            "sync = mhtest.plugins.cli_sync:SyncCommand",
            "variants = mhtest.plugins.cli_variants:VariantsCommand",
            "jobs = mhtest.plugins.cli_jobs:JobsCommand",
            "replay = mhtest.plugins.cli_replay:ReplayCommand",
            "queue = mhtest.plugins.cli_queue:QueueCommand",
        ],
        "mhtest.result": [
            "json = mhtest.plugins.result_json:JSONResult",
            "xunit = mhtest.plugins.result_xunit:XUnitResult",
            "tap = mhtest.plugins.result_tap:TAPResult",
            "html = mhtest.plugins.result_html:HTMLResult",
        ],
        "mhtest.spawner": [
            "local = mhtest.plugins.spawner_local:LocalSpawner",
            "ssh = mhtest.plugins.spawner_ssh:SSHSpawner",
        ],
        "mhtest.resolver": [
            "python = mhtest.plugins.resolver_python:PythonResolver",
            "control = mhtest.plugins.resolver_control:ControlResolver",
            "exec = mhtest.plugins.resolver_exec:ExecResolver",
        ],
        "mhtest.power": [
            "qmp = mhtest.plugins.power_qmp:QMPPower",
            "ipmi = mhtest.plugins.power_ipmi:IPMIPower",
            "command = mhtest.plugins.power_command:CommandPower",
        ],
    },
)
