"""Plugin discovery: installed distributions go live without a restart; broken ones are refused alone."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from botcriptofy import hookimpl
from botcriptofy._manager import discover, inspect_plugin

HELLO = """
from botcriptofy import Route, hookimpl


async def hello(request):
    return {"hello": "{name}"}


@hookimpl
def register_routes(kernel):
    return [Route("/hello/{name}", hello)]
"""

BOTCRIPTOFY = str(Path(sys.executable).with_name("botcriptofy"))


def installed_names() -> list[str]:
    return sorted(discover())


async def test_pip_installed_plugin_goes_live_on_rescan_without_restart(kernel_harness, install_plugin):
    harness = await kernel_harness(discover=True, watch=True, settings={"plugins": {"disabled": installed_names()}})
    before = harness.kernel
    dist, name = install_plugin("hello", HELLO, version="1.2.3")
    assert (await harness.client.get(f"/hello/{name}")).status_code == 404

    # The command waits for the workers' outcome: run it without blocking this worker's event loop.
    rescan = await asyncio.create_subprocess_exec(
        BOTCRIPTOFY,
        "--settings",
        str(harness.settings_dir),
        "plugins",
        "rescan",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await rescan.communicate()
    assert rescan.returncode == 0, err.decode()
    assert f"worker {os.getpid()}: generation" in out.decode() and name in out.decode()
    assert name in harness.kernel.plugins

    response = await harness.client.get(f"/hello/{name}")
    assert response.json() == {"hello": name}
    listed = {p["name"]: p for p in (await harness.client.get("/-/plugins")).json()["plugins"]}
    assert listed[name]["version"] == "1.2.3"
    assert listed[name]["distribution"] == dist
    assert listed[name]["enabled"] is True
    assert harness.runtime.current is not before


async def test_pip_installed_plugin_is_picked_up_by_the_next_settings_change(kernel_harness, install_plugin):
    disabled = installed_names()
    harness = await kernel_harness(discover=True, settings={"plugins": {"disabled": disabled}})
    _, name = install_plugin("later", HELLO)
    # A settings change that mentions the new plugin is valid only once it has been discovered.
    result = await harness.apply({"plugins": {"disabled": disabled}, name: {}})
    assert not result.applied and f"unknown plugin '{name}'" in result.error
    harness.write_settings({"plugins": {"disabled": disabled}})
    result = await harness.runtime.reload(rescan=True)
    assert result.applied and name in result.changes["started"]
    assert (await harness.client.get(f"/hello/{name}")).status_code == 200


async def test_plugin_for_another_kernel_version_is_refused_and_others_start(kernel_harness, install_plugin):
    _, good = install_plugin("good", HELLO)
    _, bad = install_plugin("future", HELLO, version="9.0.0", kernel_requirement="botcriptofy>=99")
    others = [n for n in installed_names() if n not in (good, bad)]
    harness = await kernel_harness(discover=True, settings={"plugins": {"disabled": others}})
    info = harness.runtime.plugins[bad]
    assert info.error is not None
    assert f"plugin '{bad}'" in info.error and "botcriptofy >=99" in info.error and "Fix:" in info.error
    assert bad not in harness.kernel.plugins
    assert (await harness.client.get(f"/hello/{good}")).status_code == 200
    listed = {p["name"]: p for p in (await harness.client.get("/-/plugins")).json()["plugins"]}
    assert listed[bad]["enabled"] is False and listed[bad]["error"]


async def test_plugin_that_fails_to_import_is_refused_and_others_start(kernel_harness, install_plugin):
    _, broken = install_plugin("broken", "raise ImportError('missing dependency frobnicate')\n")
    _, good = install_plugin("fine", HELLO)
    others = [n for n in installed_names() if n not in (good, broken)]
    harness = await kernel_harness(discover=True, settings={"plugins": {"disabled": others}})
    assert "frobnicate" in harness.runtime.plugins[broken].error
    assert (await harness.client.get(f"/hello/{good}")).status_code == 200


def test_misspelled_hook_is_refused_at_load_with_the_right_name_as_fix():
    class Typo:
        @hookimpl
        def register_route(self, kernel):
            return []

    info = inspect_plugin("typo", Typo())
    assert info.error is not None
    assert "plugin 'typo'" in info.error
    assert "hook 'register_route'" in info.error
    assert "did you mean 'register_routes'" in info.error


def test_hook_with_an_unknown_argument_is_refused():
    class WrongArgs:
        @hookimpl
        def startup(self, kernel, app):
            pass

    info = inspect_plugin("wrongargs", WrongArgs())
    assert info.error is not None and "plugin 'wrongargs'" in info.error and "app" in info.error


async def test_plugin_whose_startup_fails_is_refused_and_others_start(kernel_harness):
    class Failing:
        @hookimpl
        def startup(self, kernel):
            raise ConnectionError("database unreachable")

    class Fine:
        @hookimpl
        def register_routes(self, kernel):
            from botcriptofy import Route

            async def fine(request):
                return {"ok": True}

            return [Route("/fine", fine)]

    harness = await kernel_harness(plugins={"failing": Failing(), "fine": Fine()})
    error = harness.runtime.plugins["failing"].error
    assert "plugin 'failing', hook 'startup'" in error and "database unreachable" in error
    assert "failing" not in harness.kernel.plugins
    assert (await harness.client.get("/fine")).status_code == 200


async def test_startup_failure_on_reload_refuses_the_change(kernel_harness):
    class Flaky:
        fail = False

        @hookimpl
        def startup(self, kernel):
            if Flaky.fail:
                raise RuntimeError("boom")

    harness = await kernel_harness(plugins={"flaky": Flaky()}, settings={"plugins": {"disabled": ["flaky"]}})
    before = harness.kernel
    Flaky.fail = True
    result = await harness.apply({})
    assert not result.applied and "plugin 'flaky', hook 'startup'" in result.error
    assert harness.kernel is before


async def test_two_plugins_declaring_the_same_route_are_reported(kernel_harness):
    from botcriptofy import Route

    async def endpoint(request):
        return {}

    class First:
        @hookimpl
        def register_routes(self, kernel):
            return [Route("/same", endpoint), Route("/also", endpoint, methods=["POST", "PUT"]), Route(f"/own/{id(self)}", endpoint)]

    class Second(First):
        pass

    harness = await kernel_harness(plugins={"first": First(), "second": Second()})
    refused = [n for n in ("first", "second") if harness.runtime.plugins[n].error]
    assert len(refused) == 1
    (loser,) = refused
    winner = "first" if loser == "second" else "second"
    error = harness.runtime.plugins[loser].error
    # Every clashing route is listed, with the plugin that has it.
    for route in ("GET /same", "POST /also", "PUT /also"):
        assert f"{route} (declared by plugin '{winner}')" in error
    assert "3 route(s)" in error and "/own/" not in error


BROKEN_AT_START = """
from botcriptofy import hookimpl


@hookimpl
def startup(kernel):
    raise RuntimeError("cannot open the exchange socket")
"""


async def test_rescan_command_waits_for_the_workers_and_names_a_refused_plugin(kernel_harness, install_plugin):
    harness = await kernel_harness(discover=True, watch=True, settings={"plugins": {"disabled": installed_names()}})
    _, good = install_plugin("fine", HELLO)
    _, broken = install_plugin("broken", BROKEN_AT_START)
    rescan = await asyncio.create_subprocess_exec(
        *(BOTCRIPTOFY, "plugins", "rescan", "--settings", str(harness.settings_dir)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await rescan.communicate()
    assert rescan.returncode == 1
    assert f"worker {os.getpid()}: plugin '{broken}' refused:" in err.decode()
    assert "RuntimeError('cannot open the exchange socket')" in err.decode()
    # The others proceed, the refused plugin is known and listed, and the request lives in the state directory.
    assert good in harness.kernel.plugins
    assert (await harness.client.get(f"/hello/{good}")).status_code == 200
    listed = {p["name"]: p for p in (await harness.client.get("/-/plugins")).json()["plugins"]}
    assert "cannot open the exchange socket" in listed[broken]["error"]
    assert [path.name for path in harness.settings_dir.iterdir()] == ["settings.toml"]
    assert (harness.state_dir / "rescan" / "request").exists()
    # Disabling it is a valid change, and then the rescan succeeds.
    result = await harness.apply({"plugins": {"disabled": [*installed_names_except(good)]}})
    assert result.applied, result.error
    rescan = await asyncio.create_subprocess_exec(
        *(BOTCRIPTOFY, "--settings", str(harness.settings_dir), "plugins", "rescan"), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await rescan.communicate()
    assert rescan.returncode == 0 and good in out.decode()


def installed_names_except(name: str) -> list[str]:
    return [found for found in installed_names() if found != name]


def test_installed_versions_are_read_once_until_a_distribution_is_installed(tmp_path, monkeypatch):
    """/-/plugins asks for every plugin's installed version on each request: the metadata is read again only
    when a directory of sys.path changes, as installing a distribution changes its site-packages."""
    import importlib.metadata

    from botcriptofy._manager import PluginInfo
    from botcriptofy._runtime import installed_versions

    site = tmp_path / "site"
    site.mkdir()

    def install(version: str) -> None:
        for old in site.glob("bcf_probe_dist-*.dist-info"):
            for file in old.iterdir():
                file.unlink()
            old.rmdir()
        info = site / f"bcf_probe_dist-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: bcf-probe-dist\nVersion: {version}\n")

    install("1.0.0")
    monkeypatch.syspath_prepend(str(site))
    reads: list[str] = []
    real = importlib.metadata.version

    def counting(name: str) -> str:
        reads.append(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", counting)
    probe = PluginInfo(name="probe", plugin=object(), version="1.0.0", distribution="bcf-probe-dist")
    builtin = PluginInfo(name="kernel", plugin=object(), version="0.2.0")
    assert installed_versions([probe, builtin]) == {"probe": "1.0.0", "kernel": "0.2.0"}
    assert installed_versions([probe, builtin]) == {"probe": "1.0.0", "kernel": "0.2.0"}
    assert reads == ["bcf-probe-dist"]  # read once

    install("1.1.0")  # a new dist-info directory: site's modification time changes
    assert installed_versions([probe])["probe"] == "1.1.0"
    assert reads == ["bcf-probe-dist"] * 2
    missing = PluginInfo(name="gone", plugin=object(), version="3.0.0", distribution="bcf-not-installed-anywhere")
    assert installed_versions([missing]) == {"gone": "3.0.0"}  # not installed: the version the code declares
