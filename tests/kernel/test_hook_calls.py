"""``call_first``: the request path's firstresult hooks called directly when one plugin implements them."""

from __future__ import annotations

import pluggy

from botcriptofy import hookimpl, hookspecs
from botcriptofy._markers import PROJECT
from botcriptofy._util import call_first


def manager(*plugins: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    return pm


class Plan:
    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls: list[tuple[object, ...]] = []

    @hookimpl
    def entitlements_for(self, tenant_id):  # declares only one of the spec's two arguments
        self.calls.append((tenant_id,))
        return self.answer


def test_one_implementation_is_called_with_the_arguments_it_declares_and_answers_as_pluggy_does():
    plan = Plan("pro")
    pm = manager(plan)
    assert call_first(pm.hook.entitlements_for, kernel="k", tenant_id="t1") == "pro"
    assert pm.hook.entitlements_for(kernel="k", tenant_id="t1") == "pro"
    assert plan.calls == [("t1",), ("t1",)]
    assert call_first(pm.hook.cached_actor, kernel="k", request=None) is None  # no implementation: pluggy's None


def test_several_implementations_or_a_wrapper_go_through_pluggy():
    first, second = Plan(None), Plan("enterprise")
    pm = manager(first, second)
    # pluggy calls the last registered first; a None answer passes to the next: the same with call_first.
    assert call_first(pm.hook.entitlements_for, kernel="k", tenant_id="t") == pm.hook.entitlements_for(kernel="k", tenant_id="t")

    seen: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def entitlements_for(self, tenant_id):
            seen.append(tenant_id)
            result = yield
            return f"wrapped {result}"

    pm = manager(Plan("pro"), Wrapper())
    assert call_first(pm.hook.entitlements_for, kernel="k", tenant_id="t2") == "wrapped pro"
    assert seen == ["t2"]
