"""Declared routes: request validation, response serialisation, problem+json errors and OpenAPI.

Routes stay plain Starlette routes; a declaration adds pydantic models for the body, the query
string and the response. The same models validate requests and describe them in ``/openapi.json``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.routing import Route as _StarletteRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ._errors import ProblemError, ServiceUnavailable
from ._types import Actor
from ._util import await_me_maybe, call_first

if TYPE_CHECKING:
    from ._kernel import Kernel

log = logging.getLogger("botcriptofy.http")

PROBLEM_JSON = "application/problem+json"
KERNEL_SCOPE_KEY = "botcriptofy.kernel"
_ACTOR_SCOPE_KEY = "botcriptofy.actor"
_UNRESOLVED = object()
UNAVAILABLE_SCOPE_KEY = "botcriptofy.unavailable"
RESPONSE_HEADERS_SCOPE_KEY = "botcriptofy.response_headers"
STATUS_SCOPE_KEY = "botcriptofy.status"
DEFAULT_MAX_BODY = 1024 * 1024

Endpoint = Callable[..., Awaitable[Any]]


def kernel_of(request: Request | Scope) -> Kernel:
    """Return the kernel generation serving this request."""
    scope = request.scope if isinstance(request, Request) else request
    return scope[KERNEL_SCOPE_KEY]  # type: ignore[no-any-return]


class _Refused:
    """Credentials this request's resolution refused: the same answer for every later consumer, without a second check."""

    __slots__ = ("error",)

    def __init__(self, error: ProblemError) -> None:
        self.error = error


async def current_actor(request: Request) -> Actor | None:
    """Resolve the caller once per request through the ``actor_from_request`` hook.

    A refusal (a :class:`ProblemError`, such as 401 for a bad signature) is kept for the request too:
    a middleware that resolved the caller first and the route that requires it get the same error,
    and the credentials are checked once (a forged token cost two signature checks).
    """
    actor = request.scope.get(_ACTOR_SCOPE_KEY, _UNRESOLVED)
    if actor is _UNRESOLVED:
        kernel = kernel_of(request)
        try:
            actor = await await_me_maybe(call_first(kernel.hook.actor_from_request, kernel=kernel, request=request))
        except ProblemError as error:
            request.scope[_ACTOR_SCOPE_KEY] = _Refused(error)
            raise
        request.scope[_ACTOR_SCOPE_KEY] = actor
    elif type(actor) is _Refused:
        raise actor.error
    return actor  # type: ignore[no-any-return]


async def cached_actor(request: Request | Scope) -> Actor | None:
    """The caller if it is already known: resolved earlier in this request, or by the ``cached_actor`` hook.

    Never verifies credentials nor reads a database: None means "not known cheaply" (anonymous, or
    credentials to resolve with :func:`current_actor`). A caller found is kept for the request, so
    :func:`current_actor` and :func:`require` return it without calling ``actor_from_request``. When
    :func:`current_actor` already refused this request's credentials, that refusal is raised again.
    """
    scope = request.scope if isinstance(request, Request) else request
    actor = scope.get(_ACTOR_SCOPE_KEY, _UNRESOLVED)
    if actor is not _UNRESOLVED:
        if type(actor) is _Refused:
            raise actor.error
        return actor  # type: ignore[no-any-return]
    kernel: Kernel = scope[KERNEL_SCOPE_KEY]
    hook = kernel.hook.cached_actor
    if not hook.get_hookimpls():
        return None
    found = await await_me_maybe(call_first(hook, kernel=kernel, request=request if isinstance(request, Request) else Request(scope)))
    if found is not None:
        scope[_ACTOR_SCOPE_KEY] = found
    return found  # type: ignore[no-any-return]


def add_response_headers(scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Have the kernel's edge add ``headers`` (lower-case ASGI pairs) to this request's response.

    A middleware that only adds headers need not wrap ``send``: the edge, which wraps it anyway,
    appends them to the response start. Returns False when the request is not served through the
    edge (a plain Starlette app): the caller then wraps ``send`` itself.
    """
    pending = scope.get(RESPONSE_HEADERS_SCOPE_KEY)
    if pending is None:
        return False
    pending.extend(headers)
    return True


def response_status(scope: Scope) -> int | None:
    """The status of this request's response once the edge has seen it start (0 before); None without the edge.

    A middleware that only needs the status after the response (metrics, penalties) reads it here
    when the inner app returns, instead of wrapping ``send``.
    """
    if RESPONSE_HEADERS_SCOPE_KEY not in scope:
        return None
    return scope.get(STATUS_SCOPE_KEY, 0)  # type: ignore[no-any-return]


async def require(request: Request, permission: str | None = None) -> Actor:
    """Return the authenticated caller, or raise 401 (no credentials) or 403 (missing ``permission``)."""
    actor = await current_actor(request)
    if actor is None:
        raise ProblemError(
            401,
            "Unauthorized",
            "This endpoint needs credentials: send 'Authorization: Bearer <access token>' or an API key.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if permission is not None and not actor.can(permission):
        raise ProblemError(403, "Forbidden", f"This action needs the permission '{permission}', which the caller does not hold.")
    return actor


def validation_problem(error: ValidationError, location: str) -> ProblemError:
    """Turn a pydantic error into a 422 (or 400 for malformed JSON) naming each field."""
    details = error.errors(include_url=False, include_context=False, include_input=False)
    if any(item["type"] == "json_invalid" for item in details):
        return ProblemError(400, "Malformed JSON", f"The {location} is not valid JSON: {details[0]['msg']}.")
    fields = []
    for item in details:
        path = ".".join(str(part) for part in item["loc"]) or location
        fields.append({"field": path, "message": item["msg"], "type": item["type"], "in": location})
    names = ", ".join(sorted({f["field"] for f in fields}))
    return ProblemError(422, "Validation failed", f"Invalid {location} field(s): {names}.", errors=fields)


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing with 413 past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ProblemError(400, "Bad Content-Length", "The Content-Length header must be a non-negative integer.")
        if int(declared) > limit:
            raise ProblemError(413, "Request body too large", f"The body may be at most {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, "Request body too large", f"The body may be at most {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def unsupported_media_type(content_type: str | None) -> ProblemError:
    got = f"'{content_type}'" if content_type else "no Content-Type"
    return ProblemError(
        415,
        "Unsupported Media Type",
        f"This endpoint takes a JSON body: send it with 'Content-Type: application/json' (got {got}).",
        headers={"Accept": "application/json"},
    )


class Route(_StarletteRoute):
    """A Starlette route with declared models, permissions and OpenAPI metadata.

    The endpoint is ``async def endpoint(request, *, body=..., query=...)`` and returns a model,
    a JSON-serialisable value or a Starlette response. ``body`` and ``query`` are passed only when
    their model is declared. ``permission`` (``department:action``) implies ``authenticated``.
    A body must come as ``application/json`` (or a ``+json`` type): anything else is a 415.
    ``operations=True`` marks an operational endpoint (like ``/metrics``), restricted by
    ``kernel.operations_access``. ``responses`` adds statuses the route can answer to the OpenAPI
    document (``{409: "Email already registered"}``).
    """

    def __init__(
        self,
        path: str,
        endpoint: Endpoint,
        *,
        methods: Sequence[str] = ("GET",),
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status_code: int = 200,
        authenticated: bool = False,
        permission: str | None = None,
        summary: str | None = None,
        tags: Sequence[str] = (),
        name: str | None = None,
        include_in_schema: bool = True,
        max_body: int = DEFAULT_MAX_BODY,
        responses: dict[int, str] | None = None,
        operations: bool = False,
    ) -> None:
        self.declared_endpoint = endpoint
        self.body_model = body
        self.query_model = query
        self.response_model = response
        self.response_adapter: TypeAdapter[Any] | None = TypeAdapter(response) if response is not None else None
        self.status_code = status_code
        self.permission = permission
        self.authenticated = authenticated or permission is not None
        self.summary = summary or (endpoint.__doc__ or "").strip().split("\n")[0] or None
        self.tags = tuple(tags)
        self.max_body = max_body
        self.responses = dict(responses or {})
        self.operations = operations
        super().__init__(
            path,
            self._handle,
            methods=list(methods),
            name=name or endpoint.__name__,
            include_in_schema=include_in_schema,
        )
        # Called straight, without Starlette's per-route error wrapper (another Request, a wrapper of send and
        # a closure per request): an error raised here reaches the same handlers one layer out, in the
        # generation's exception layer, with the same scope.
        self.app = self._asgi

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handle(Request(scope, receive, send))
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._run(request)
        except ProblemError:
            raise
        except ClientDisconnect:
            log_client_disconnect(request.scope)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception as error:
            problem = await translate(request.scope.get(KERNEL_SCOPE_KEY), error)
            if problem is None:
                raise
            raise problem from error

    async def _run(self, request: Request) -> Response:
        if self.operations:
            await require_operations(request)
        if self.authenticated:
            await require(request, self.permission)
        kwargs: dict[str, Any] = {}
        if self.query_model is not None:
            try:
                kwargs["query"] = self.query_model.model_validate(dict(request.query_params))
            except ValidationError as error:
                raise validation_problem(error, "query") from None
        if self.body_model is not None:
            content_type = request.headers.get("content-type")
            if content_type is not None and not _is_json(content_type):
                raise unsupported_media_type(content_type)
            raw = await read_body(request, self.max_body)
            if content_type is None and raw:
                raise unsupported_media_type(None)
            try:
                kwargs["body"] = self.body_model.model_validate_json(raw or b"null")
            except ValidationError as error:
                raise validation_problem(error, "body") from None
        result = await self.declared_endpoint(request, **kwargs)
        if isinstance(result, Response):
            return result
        if self.response_adapter is not None:
            if not isinstance(result, BaseModel):
                result = self.response_adapter.validate_python(result)
            return Response(self.response_adapter.dump_json(result), self.status_code, media_type="application/json")
        if isinstance(result, BaseModel):
            return Response(result.model_dump_json(), self.status_code, media_type="application/json")
        return JSONResponse(result, self.status_code)


class IndexedRouter(Router):
    """Starlette's router plus an index of fixed paths.

    A request for a path without parameters finds its route in one dictionary lookup instead of
    trying every route's pattern in turn, so adding plugins does not slow the kernel's own routes.
    A fixed path therefore wins over an overlapping parameterised path (``/items/new`` over
    ``/items/{id}``) whatever the order in which plugins declared them.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        super().__init__(list(routes))
        self.fixed: dict[str, list[_StarletteRoute]] = {}
        for route in self.routes:
            if isinstance(route, _StarletteRoute) and not route.param_convertors:
                self.fixed.setdefault(route.path, []).append(route)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]
            for route in self.fixed.get(path, ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


class ExceptionLayer(ExceptionMiddleware):
    """Starlette's exception middleware, without its wrapper of ``send`` behind the kernel's edge.

    The same handlers for the same errors (``HTTPException`` and ``ProblemError`` here; anything else
    goes on to the edge and the server-error layer). Whether the response has started is read from the
    edge, which records the status as it passes the start on, instead of from a wrapper of ``send`` and
    a request object built for every request in case an error comes.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or RESPONSE_HEADERS_SCOPE_KEY not in scope:
            await super().__call__(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = (self._exception_handlers, self._status_handlers)
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            handler: Any = self._status_handlers.get(error.status_code) if isinstance(error, HTTPException) else None
            if handler is None:
                handler = next((self._exception_handlers[cls] for cls in type(error).__mro__ if cls in self._exception_handlers), None)
            if handler is None:
                raise
            if STATUS_SCOPE_KEY in scope:
                raise RuntimeError("Caught handled exception, but response already started.") from error
            response = await await_me_maybe(handler(Request(scope, receive, send), error))
            if response is not None:
                await response(scope, receive, send)
            error.__traceback__ = None  # a reused exception instance would keep every request's traceback


class ServerErrorLayer(ServerErrorMiddleware):
    """Starlette's server-error middleware (a 500 for any error, then raised again for the server to log),
    without its wrapper of ``send``: directly outside the kernel's edge, which records whether the response started."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.debug:
            await super().__call__(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception as error:
            if STATUS_SCOPE_KEY not in scope:
                handler: Any = self.handler
                response = await await_me_maybe(handler(Request(scope), error))
                await response(scope, receive, send)
            raise


class GenerationApp(Starlette):
    """The Starlette application of a generation, composed as Starlette composes its own: a server-error
    layer, the plugins' middleware, an exception layer, the router. The two layers are
    :class:`ServerErrorLayer` (when the outermost middleware is the kernel's edge, which records whether
    the response started) and :class:`ExceptionLayer`."""

    def build_middleware_stack(self) -> ASGIApp:
        error_handler = None
        handlers: dict[Any, Any] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                handlers[key] = value
        app: ASGIApp = ExceptionLayer(self.router, handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        outermost = self.user_middleware[0].cls if self.user_middleware else None
        lean = error_handler is not None and getattr(outermost, "records_response_status", False)
        return (ServerErrorLayer if lean else ServerErrorMiddleware)(app, handler=error_handler, debug=self.debug)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


# Not sent to anyone (the client is gone); named after the status proxies log for it.
CLIENT_CLOSED_REQUEST = 499


def log_client_disconnect(scope: Scope) -> None:
    """Log, at info level, a client that went away before sending its whole request: not a server error."""
    client = scope.get("client")
    log.info(
        "client disconnected before sending the whole request: %s %s",
        scope.get("method", ""),
        scope.get("path", ""),
        extra={"method": scope.get("method", ""), "path": scope.get("path", ""), "client": client[0] if client else None},
    )


def problem_response(problem: ProblemError) -> Response:
    return JSONResponse(problem.to_dict(), problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


async def handle_error(request: Request, error: Exception) -> Response:
    """Render any error as problem+json, unless a plugin's ``render_error`` answers first."""
    if isinstance(error, ServiceUnavailable):
        request.scope[UNAVAILABLE_SCOPE_KEY] = error.dependency
    kernel = request.scope.get(KERNEL_SCOPE_KEY)
    if kernel is not None:
        custom = await await_me_maybe(kernel.hook.render_error(kernel=kernel, request=request, error=error))
        if custom is not None:
            return custom  # type: ignore[no-any-return]
    if isinstance(error, ProblemError):
        return problem_response(error)
    if isinstance(error, ClientDisconnect):
        log_client_disconnect(request.scope)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(error, HTTPException):
        headers = dict(error.headers or {})
        title, detail = "HTTP error", str(error.detail)
        if error.status_code == 404:
            title, detail = "Not Found", f"No route matches {request.method} {request.url.path}."
        elif error.status_code == 405:
            allowed = _allowed_methods(request)
            headers = {"Allow": ", ".join(allowed)}
            title, detail = "Method Not Allowed", f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}."
        return problem_response(ProblemError(error.status_code, title, detail, headers=headers))
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem_response(ProblemError(500, "Internal Server Error", "The server failed to handle this request; it has been logged."))


def _allowed_methods(request: Request) -> list[str]:
    app = request.scope.get("app")
    methods: set[str] = set()
    for route in getattr(app, "routes", ()):
        if isinstance(route, _StarletteRoute) and route.path_regex.match(request.url.path):
            methods |= set(route.methods or ())
    return sorted(methods)


async def translate(kernel: Kernel | None, error: Exception) -> ProblemError | None:
    """Return ``error`` as a problem: itself when it is one, else what a plugin's ``translate_error`` makes of it."""
    if isinstance(error, ProblemError):
        return error
    if kernel is None:
        return None
    try:
        found = await await_me_maybe(kernel.hook.translate_error(kernel=kernel, error=error))
    except Exception:
        log.exception("hook 'translate_error' failed while translating %r", error, extra={"hook": "translate_error"})
        return None
    return found if isinstance(found, ProblemError) else None


# ---------------------------------------------------------------------------------------------
# Operational endpoints
# ---------------------------------------------------------------------------------------------


PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip", b"via")


def is_local_client(request: Request) -> bool:
    """Whether the TCP peer is loopback and no proxy may be standing in for another client."""
    if kernel_of(request).kernel_settings.trusted_proxies:
        return False  # a proxy forwards remote clients; its own (loopback) address proves nothing
    if any(name in PROXY_HEADERS for name, _ in request.scope.get("headers", ())):
        return False
    host = request.client.host if request.client else ""
    try:
        return host == "testclient" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _presented_token(request: Request) -> str | None:
    token = request.headers.get("x-operations-token")
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return token


async def operations_allowed(request: Request) -> bool:
    """Whether the caller may read the operational endpoints (``kernel.operations_access``: any listed way grants)."""
    settings = kernel_of(request).kernel_settings
    ways = settings.operations_access
    if "public" in ways:
        return True
    if "token" in ways:
        expected = settings.operations_token.get_secret_value()
        presented = _presented_token(request)
        if expected and presented is not None and hmac.compare_digest(presented.encode(), expected.encode()):
            return True
    if "loopback" in ways and is_local_client(request):
        return True
    if "permission" in ways:
        actor = await current_actor(request)
        if actor is not None and actor.can(settings.operations_permission):
            return True
    return False


async def require_operations(request: Request) -> None:
    """Refuse with 403 a caller that ``kernel.operations_access`` does not let read operational endpoints."""
    if not await operations_allowed(request):
        settings = kernel_of(request).kernel_settings
        raise ProblemError(
            403,
            "Forbidden",
            f"This operational endpoint is restricted (kernel.operations_access = {list(settings.operations_access)}): "
            "present the operations token, call from loopback, or hold the configured permission, as the operator allows.",
        )


# ---------------------------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-zA-Z_]+)?}")
_PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status"],
}


def _walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterable[tuple[str, Route]]:
    for route in routes:
        if isinstance(route, Route) and route.include_in_schema:
            yield prefix + route.path, route
        elif isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)


DEFAULT_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {"bearer": {"type": "http", "scheme": "bearer"}}
_IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Send the same key again to retry safely: the first response is returned and the work runs once (24 h).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def security_schemes(kernel: Kernel | None) -> dict[str, dict[str, Any]]:
    """The security schemes plugins declare through ``register_security_schemes`` (a bearer token when none does)."""
    schemes: dict[str, dict[str, Any]] = {}
    if kernel is not None:
        for declared in kernel.hook.register_security_schemes(kernel=kernel):
            schemes.update(declared or {})
    return schemes or dict(DEFAULT_SECURITY_SCHEMES)


def openapi_document(routes: Iterable[BaseRoute], *, title: str, version: str, kernel: Kernel | None = None) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of every declared route.

    Besides each route's own statuses, every operation may answer 503 (a dependency is down) and,
    when a rate limiter is enabled, 429; unsafe ``/v1`` operations take ``Idempotency-Key``.
    """
    schemes = security_schemes(kernel)
    rate_limited = kernel is not None and kernel.rate_limiter() is not None
    declared = list(_walk(routes))
    inputs: list[tuple[Any, Any, TypeAdapter[Any]]] = []
    for _, route in declared:
        for slot, model, mode in (
            ("body", route.body_model, "validation"),
            ("query", route.query_model, "validation"),
            ("response", route.response_model, "serialization"),
        ):
            if model is not None:
                inputs.append(((id(route), slot), mode, TypeAdapter(model)))
    schemas_by_key, top = TypeAdapter.json_schemas(inputs, ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = dict(top.get("$defs", {}))

    def schema_of(route: Route, slot: str) -> dict[str, Any]:
        mode: Any = "serialization" if slot == "response" else "validation"
        key: Any = ((id(route), slot), mode)
        return dict(schemas_by_key[key])

    paths: dict[str, dict[str, Any]] = {}
    for path, route in declared:
        template = _PATH_PARAM.sub(r"{\1}", path)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _PATH_PARAM.findall(path)
        ]
        if route.query_model is not None:
            schema = schema_of(route, "query")
            schema = definitions.get(schema.get("$ref", "").rsplit("/", 1)[-1], schema)
            required = set(schema.get("required", ()))
            for name, prop in schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        responses: dict[str, Any] = {}
        if route.response_model is not None:
            responses[str(route.status_code)] = {
                "description": "Success",
                "content": {"application/json": {"schema": schema_of(route, "response")}},
            }
        else:
            responses[str(route.status_code)] = {"description": "Success"}
        problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        if route.body_model is not None or route.query_model is not None:
            responses["422"] = {"description": "Validation failed", **problem}
        if route.body_model is not None:
            responses["400"] = {"description": "Malformed JSON", **problem}
            responses["413"] = {"description": "Request body too large", **problem}
            responses["415"] = {"description": "The body is not JSON (send Content-Type: application/json)", **problem}
        if route.authenticated:
            responses["401"] = {"description": "Unauthorized", **problem}
        if route.permission:
            responses["403"] = {"description": "Forbidden", **problem}
        if route.operations:
            responses["401"] = {"description": "Unauthorized", **problem}
            responses["403"] = {"description": "Restricted by kernel.operations_access", **problem}
        for status, description in route.responses.items():
            responses.setdefault(str(status), {"description": description, **problem})
        if _PATH_PARAM.search(path):
            # A path with an id names something that may not exist, or not for this caller.
            responses.setdefault("404", {"description": "No such resource", **problem})
        if rate_limited:
            responses.setdefault("429", {"description": "Too many requests: retry after Retry-After seconds", **problem})
        responses.setdefault("503", {"description": "A dependency is unavailable: retry after Retry-After seconds", **problem})
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            operation: dict[str, Any] = {"operationId": f"{route.name}_{method.lower()}", "responses": responses}
            if route.summary:
                operation["summary"] = route.summary
            if route.tags:
                operation["tags"] = list(route.tags)
            operation_parameters = list(parameters)
            if method in _UNSAFE and template.startswith("/v1/"):
                operation_parameters.append(_IDEMPOTENCY_PARAMETER)
                operation["responses"] = {
                    **responses,
                    "400": responses.get("400", {"description": "Invalid Idempotency-Key", **problem}),
                    "409": responses.get("409", {"description": "A request with this Idempotency-Key is in progress", **problem}),
                    "422": responses.get("422", {"description": "Idempotency-Key reused for another request", **problem}),
                }
            if operation_parameters:
                operation["parameters"] = operation_parameters
            if route.body_model is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema_of(route, "body")}},
                }
            if route.authenticated:
                operation["security"] = [{name: []} for name in schemes]
            paths.setdefault(template, {})[method.lower()] = operation
    schemas = dict(definitions)
    schemas["Problem"] = _PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": schemes},
    }
