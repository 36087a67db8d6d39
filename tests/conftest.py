"""Fixtures of this repository only; the shared ones come from the kernel's pytest plugin.

``botcriptofy.testing`` provides ``kernel_harness``, ``live_server``, ``database_url``,
``postgres_url``, ``make_postgres_database``, ``redis_url`` and ``redis_prefix``, the same fixtures
a plugin outside this repository tests with. PostgreSQL and Redis are required, never skipped:
point the suite elsewhere with ``BCF_TEST_POSTGRES`` and ``BCF_TEST_REDIS``.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PLUGIN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "{version}"
requires-python = ">=3.11"
dependencies = ["{kernel_requirement}"]

[project.entry-points.botcriptofy]
{name} = "{package}"

[tool.hatch.build.targets.wheel]
packages = ["src/{package}"]
"""


SITE_PACKAGES_LOCK = Path(sys.prefix) / ".botcriptofy-test-site-packages.lock"


@pytest.fixture
def settled_plugins() -> Iterator[None]:
    """Keep the installed plugins as they are for this test: no ``install_plugin`` test installs or removes one meanwhile.

    For tests that list the installed plugins (to disable all but a few, say): a temporary plugin that
    another worker installs and removes in between would otherwise appear in the list and then be
    refused as unknown. Readers share the lock; ``install_plugin`` takes it alone.
    """
    lock = open(SITE_PACKAGES_LOCK, "w")  # noqa: SIM115 - held for the whole test
    fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


@pytest.fixture
def install_plugin(tmp_path: Path) -> Iterator[Callable[..., tuple[str, str]]]:
    """Build a plugin distribution from module source in a temporary directory and pip-install it.

    Returns ``install(name, source, version=..., kernel_requirement=...) -> (distribution, plugin name)``;
    the name gets a unique suffix. Every distribution is uninstalled after the test. Tests using it
    change the environment that every kernel discovers plugins from, so they hold a lock shared by
    all pytest-xdist workers and run one at a time.
    """
    lock = open(SITE_PACKAGES_LOCK, "w")  # noqa: SIM115 - held for the whole test
    fcntl.flock(lock, fcntl.LOCK_EX)
    installed: list[str] = []

    def install(name: str, source: str, *, version: str = "1.0.0", kernel_requirement: str = "botcriptofy>=0.1,<0.3") -> tuple[str, str]:
        unique = f"{name}_{uuid.uuid4().hex[:8]}"
        dist = f"bcf-test-{unique.replace('_', '-')}"
        package = f"bcf_test_{unique}"
        root = tmp_path / dist
        (root / "src" / package).mkdir(parents=True)
        (root / "pyproject.toml").write_text(
            PLUGIN_PYPROJECT.format(dist=dist, version=version, kernel_requirement=kernel_requirement, name=unique, package=package)
        )
        (root / "src" / package / "__init__.py").write_text(source.replace("{name}", unique))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--disable-pip-version-check",
                str(root),
            ],
            check=True,
            capture_output=True,
        )
        installed.append(dist)
        return dist, unique

    try:
        yield install
    finally:
        for dist in installed:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", dist], check=False, capture_output=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
