"""The pure ASGI middleware that limits every HTTP request.

Order of work for one request:

1. A caller this worker has resolved before (``botcriptofy.cached_actor``: an in-process memo, no
   signature check, no database) is limited in one script call: the per-address flood guard, the
   plan rate (with the route's cost) and the tenant's monthly quota together, all or nothing.
2. Any other request passes the per-address flood guard first (one script call), so a flooding
   address is refused without any authentication work; only then the caller is resolved
   (``botcriptofy.current_actor``, kept on the request for the route), its plan found (entitlements,
   cached briefly), and the plan rate and the monthly quota are checked together (one script call).
3. The response gets ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` of the limit
   closest to exhaustion; a refusal is a 429 problem+json with ``Retry-After``.
4. After the response, error statuses add to the subject's penalty score.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botcriptofy import (
    Event,
    Kernel,
    ProblemError,
    ServiceUnavailable,
    StashKey,
    add_response_headers,
    cached_actor,
    current_actor,
    kernel_of,
    response_status,
)

from ._backend import MemoryBackend, RedisBackend, Unavailable
from ._core import NEVER, QUOTA, US, Check, Outcome
from ._events import QuotaThresholdReached, SubjectPenalized
from ._guard import Guard, choose
from ._metrics import Metrics
from ._policy import QUOTA_NAME, PlanSpec, Policy, Subject

if TYPE_CHECKING:
    from botcriptofy import Actor

log = logging.getLogger("botcriptofy.ratelimit")

PROBLEM_JSON = b"application/problem+json"
PROBLEMS = "https://botcriptofy.dev/problems/"
WARN_AT = (80, 100)
BLOCKED_MAX = 100_000
COMPILED_MAX = 10_000  # callers and addresses compiled per worker; past it the memo starts again empty
_MISSING = object()


@dataclass(slots=True)
class State:
    """The plugin's state in a generation's stash: compiled settings, backend, metrics, guard.

    ``blocked`` remembers addresses Redis refused, until their Retry-After: a flood is refused
    in process without a round trip per request (other workers still ask Redis).
    """

    policy: Policy
    backend: MemoryBackend | RedisBackend
    metrics: Metrics
    guard: Guard
    blocked: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    # Compiled per caller and per address, for the callers the identity memo returns as the same object on
    # every request: (actor, plan, cost) -> (subject, checks), and address -> flood check.
    compiled: dict[int, tuple[Actor, PlanSpec, int, Subject, list[Check]]] = field(default_factory=dict)
    floods: dict[str, Check | None] = field(default_factory=dict)

    def flood_check(self, ip: str) -> Check | None:
        found = self.floods.get(ip, _MISSING)
        if found is _MISSING:
            if len(self.floods) >= COMPILED_MAX:
                self.floods.clear()
            found = self.floods[ip] = self.policy.flood_check(ip)
        return found  # type: ignore[return-value]

    def subject_checks(self, actor: Actor | None, ip: str, plan: PlanSpec, cost: int) -> tuple[Subject, list[Check]]:
        """The subject and its checks (never to be changed: they are shared by the caller's later requests)."""
        if actor is None:
            subject = self.policy.subject_of(None, ip)
            return subject, self.policy.subject_checks(subject, plan, cost)
        found = self.compiled.get(id(actor))
        if found is not None and found[0] is actor and found[1] is plan and found[2] == cost:
            return found[3], found[4]
        subject = self.policy.subject_of(actor, ip)
        checks = self.policy.subject_checks(subject, plan, cost)
        if len(self.compiled) >= COMPILED_MAX:  # it holds the actors: bounded well below the identity memo's 50,000
            self.compiled.clear()
        self.compiled[id(actor)] = (actor, plan, cost, subject, checks)
        return subject, checks

    def remember_blocked(self, key: str, outcome: Outcome) -> None:
        if len(self.blocked) >= BLOCKED_MAX:
            self.blocked.clear()
        now = time.monotonic()
        self.blocked[key] = (now + outcome.retry_after / US, now + outcome.reset_after / US, outcome.limit)


STATE: StashKey[State] = StashKey("ratelimit.state")


def _ceil_seconds(us: int) -> int:
    return max(0, -(-us // US))


_HEADERS: dict[tuple[int, int, int], list[tuple[bytes, bytes]]] = {}


def rate_headers(outcome: Outcome) -> list[tuple[bytes, bytes]]:
    """The ``RateLimit-*`` headers of ``outcome``; the same (never changed) list for the same three values."""
    values = (outcome.limit, outcome.remaining, _ceil_seconds(outcome.reset_after))
    found = _HEADERS.get(values)
    if found is None:
        if len(_HEADERS) >= COMPILED_MAX:
            _HEADERS.clear()
        found = _HEADERS[values] = [
            (b"ratelimit-limit", str(values[0]).encode()),
            (b"ratelimit-remaining", str(values[1]).encode()),
            (b"ratelimit-reset", str(values[2]).encode()),
        ]
    return found


def _per_minute(count: int) -> str:
    return f"{count} request per minute" if count == 1 else f"{count} requests per minute"


def _tightened(outcome: Outcome) -> str:
    if outcome.factor >= 1000:
        return ""
    return f", tightened to {outcome.factor / 10:g} % of that after recent error responses"


class RateLimitMiddleware:
    """Pure ASGI middleware: HTTP requests are limited, every other scope passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            kernel = kernel_of(scope)
        except KeyError:  # not served by a botcriptofy runtime
            kernel = None
        state = kernel.stash.get(STATE, None) if kernel is not None else None
        if state is None or scope["path"] in state.policy.exempt:
            await self.app(scope, receive, send)
            return
        assert kernel is not None
        policy, backend, metrics = state.policy, state.backend, state.metrics
        params = policy.penalty
        # The in-process store answers at once: called directly, without a coroutine per request.
        local = backend.store.hit if type(backend) is MemoryBackend else None
        ip = policy.client_ip(scope)
        shown: Outcome | None = None
        subject: Subject | None = None
        events: list[tuple[Event, str, str | None]] = []
        try:
            flood = state.flood_check(ip)
            if flood is not None and policy.enforce:
                blocked = state.blocked.get(flood.key)
                if blocked is not None:
                    # Refused a moment ago and still within its Retry-After: refuse again without asking Redis.
                    left = blocked[0] - time.monotonic()
                    if left > 0:
                        metrics.count("limited", "flood_guard")
                        cached = Outcome(False, blocked[2], 0, int((blocked[1] - blocked[0]) * US + left * US), int(left * US))
                        await self._refuse(send, policy, flood, cached, None, None, ip)
                        return
                    state.blocked.pop(flood.key, None)
            # A caller this worker resolved before costs no verification: its limits and the flood guard go
            # to the backend together, in one call. Any other caller passes the flood guard first.
            try:
                actor = await cached_actor(scope)
            except ProblemError:
                actor = None
            if actor is None and flood is not None:
                verdict = local([flood], params) if local is not None else await backend.hit([flood], params)
                shown = verdict.outcomes[0]
                if not verdict.allowed and policy.enforce:
                    await self._refuse_flood(kernel, state, send, flood, shown, verdict.source, ip, events)
                    return
                flood = None
                actor = await _actor(scope)
            plan = policy.remembered_plan(actor)
            if plan is None:
                plan = await policy.plan_for(kernel, actor)
            subject, checks = state.subject_checks(actor, ip, plan, policy.cost_for(scope["method"], scope["path"]))
            if flood is not None:
                checks = [flood, *checks]
            if checks:
                verdict = local(checks, params) if local is not None else await backend.hit(checks, params)
                index = choose(verdict.outcomes)
                outcome = verdict.outcomes[index]
                if not verdict.allowed and policy.enforce:
                    if checks[index] is flood:
                        await self._refuse_flood(kernel, state, send, flood, outcome, verdict.source, ip, events)
                        return
                    metrics.count("limited", checks[index].name)
                    await self._refuse(send, policy, checks[index], outcome, plan, subject, ip)
                    if any(o.crossed for o in verdict.outcomes):
                        events.append((self._penalized(subject, ip, 429), _penalty_key(subject.penalty_key), subject.tenant_id))
                        await _publish(kernel, events)
                    return
                if shown is None or outcome.remaining <= shown.remaining:
                    shown = outcome
                if verdict.allowed and subject.tenant_id is not None and checks[-1].kind == QUOTA:
                    start = 1 if flood is not None else 0
                    self._quota_events(policy, checks[start:], verdict.outcomes[start:], plan, subject, events)
        except Unavailable as error:
            metrics.count("unavailable")
            problem = ServiceUnavailable(f"{error}; retry shortly.", retry_after=1, dependency="redis")
            await _send_problem(send, problem, [(name.lower().encode(), value.encode()) for name, value in problem.headers.items()])
            return
        metrics.count("allowed")
        extra = rate_headers(shown) if shown is not None else []
        if add_response_headers(scope, extra):
            # Served through the kernel's edge: it adds the headers and records the status; no wrapper of send.
            await self.app(scope, receive, send)
            status = response_status(scope) or 0
        else:
            status = 0

            async def send_with_headers(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if extra:
                        message = {**message, "headers": [*message.get("headers", ()), *extra]}
                await send(message)

            await self.app(scope, receive, send_with_headers)
        assert subject is not None
        weight = policy.weights.get(status)
        if weight:
            metrics.penalties.labels(str(status)).inc(weight)
            try:
                crossed = await backend.penalize([subject.penalty_key], weight, params)
            except Unavailable:
                crossed = [False]
            if crossed[0]:
                events.append((self._penalized(subject, ip, status), _penalty_key(subject.penalty_key), subject.tenant_id))
        if events:
            await _publish(kernel, events)

    # -- refusals ---------------------------------------------------------------------------

    async def _refuse_flood(
        self, kernel: Kernel, state: State, send: Send, flood: Check, outcome: Outcome, source: str, ip: str,
        events: list[tuple[Event, str, str | None]],
    ) -> None:
        state.metrics.count("limited", "flood_guard")
        if source == "redis" and outcome.retry_after != NEVER:
            state.remember_blocked(flood.key, outcome)
        await self._refuse(send, state.policy, flood, outcome, None, None, ip)
        if outcome.crossed:
            events.append((SubjectPenalized(subject=f"address {ip}", address=ip, status=429), _penalty_key(f"ip:{ip}"), None))
            await _publish(kernel, events)

    async def _refuse(
        self, send: Send, policy: Policy, check: Check, outcome: Outcome, plan: PlanSpec | None, subject: Subject | None, ip: str
    ) -> None:
        retry_us = outcome.reset_after if outcome.retry_after == NEVER else outcome.retry_after
        retry = max(1, _ceil_seconds(retry_us))
        if check.kind == QUOTA:
            assert plan is not None
            used = outcome.limit - outcome.remaining
            upgrade = policy.upgrade_for(plan.name, outcome.limit)
            renews = datetime.fromtimestamp(datetime.now(UTC).timestamp() + outcome.reset_after / US, UTC).strftime("%Y-%m-%d %H:%M")
            lift = f" The {upgrade} plan lifts it." if upgrade else ""
            problem = ProblemError(
                429,
                "Quota exceeded",
                f"The '{QUOTA_NAME}' quota of the {plan.name} plan is used up ({used}/{outcome.limit}); it renews at {renews} UTC.{lift}",
                type=PROBLEMS + "quota-exceeded",
                rate_limit="quota",
                quota=QUOTA_NAME,
                plan=plan.name,
                upgrade_to=upgrade,
                used=used,
                limit=outcome.limit,
                retry_after=retry,
            )
        elif plan is None:
            problem = ProblemError(
                429,
                "Too Many Requests",
                f"Too many requests from {ip}: the flood guard allows {_per_minute(policy.flood_rate)} with bursts of "
                f"{policy.flood_burst} per address{_tightened(outcome)}. Retry in {retry} s.",
                type=PROBLEMS + "rate-limited",
                rate_limit="flood_guard",
                retry_after=retry,
            )
        else:
            assert subject is not None
            if outcome.retry_after == NEVER:
                why = (
                    f"this request costs {check.cost} tokens, more than the burst of {outcome.limit} the {plan.name} plan "
                    f"allows{_tightened(outcome)}"
                )
            elif subject.tenant_id is None and plan.name == "anonymous":
                why = (
                    f"unauthenticated callers may make {_per_minute(plan.rate_per_minute)} with bursts of {plan.burst} "
                    f"per address{_tightened(outcome)}; {subject.label} has used them up"
                )
            else:
                why = (
                    f"the {plan.name} plan allows {_per_minute(plan.rate_per_minute)} with bursts of {plan.burst}"
                    f"{_tightened(outcome)}; {subject.label} has used them up"
                )
            problem = ProblemError(
                429,
                "Too Many Requests",
                f"Rate limit exceeded: {why}. Retry in {retry} s.",
                type=PROBLEMS + "rate-limited",
                rate_limit="plan",
                plan=plan.name,
                retry_after=retry,
            )
        await _send_problem(send, problem, [*rate_headers(outcome), (b"retry-after", str(retry).encode())])

    # -- events -----------------------------------------------------------------------------

    @staticmethod
    def _penalized(subject: Subject, ip: str, status: int) -> SubjectPenalized:
        return SubjectPenalized(subject=subject.label, tenant_id=subject.tenant_id, address=ip, status=status)

    @staticmethod
    def _quota_events(
        policy: Policy,
        checks: list[Check],
        outcomes: list[Outcome],
        plan: PlanSpec,
        subject: Subject,
        events: list[tuple[Event, str, str | None]],
    ) -> None:
        for check, outcome in zip(checks, outcomes, strict=True):
            if check.kind != QUOTA or subject.tenant_id is None:
                continue
            used = outcome.limit - outcome.remaining
            for percent in WARN_AT:
                mark = math.ceil(outcome.limit * percent / 100)
                if used - check.cost < mark <= used:
                    month = datetime.now(UTC).strftime("%Y-%m")
                    event = QuotaThresholdReached(
                        tenant_id=subject.tenant_id,
                        plan=plan.name,
                        quota=QUOTA_NAME,
                        used=used,
                        limit=outcome.limit,
                        percent=percent,
                        upgrade_to=policy.upgrade_for(plan.name, outcome.limit),
                    )
                    events.append((event, f"quota:{subject.tenant_id}:{month}:{percent}", subject.tenant_id))


def _penalty_key(subject: str) -> str:
    """Idempotency key of a penalty event: one per subject and minute (a subject may be penalised again later)."""
    return f"pen:{subject}:{int(time.time() // 60)}"


async def _actor(scope: Scope) -> Actor | None:
    """The caller; invalid credentials count as anonymous here (the route answers 401 itself when it needs them)."""
    try:
        return await current_actor(Request(scope))
    except ProblemError:
        return None


async def _send_problem(send: Send, problem: ProblemError, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(problem.to_dict(), separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": problem.status,
            "headers": [(b"content-type", PROBLEM_JSON), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _publish(kernel: Kernel, events: list[tuple[Event, str, str | None]]) -> None:
    for event, key, tenant in events:
        try:
            await kernel.events.publish(event, idempotency_key=key, tenant_id=tenant)
        except Exception:
            log.exception("could not publish %s", event.event_type)


__all__ = ["STATE", "RateLimitMiddleware", "State"]
