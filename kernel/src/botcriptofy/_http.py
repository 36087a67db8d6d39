"""Declared routes: request validation, response serialisation, problem+json errors and OpenAPI.

Routes stay plain Starlette routes; a declaration adds pydantic models for the body, the query
string and the response. The same models validate requests and describe them in ``/openapi.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.routing import Route as _StarletteRoute
from starlette.types import Receive, Scope, Send

from ._errors import ProblemError
from ._types import Actor
from ._util import await_me_maybe

if TYPE_CHECKING:
    from ._kernel import Kernel

log = logging.getLogger("botcriptofy.http")

PROBLEM_JSON = "application/problem+json"
KERNEL_SCOPE_KEY = "botcriptofy.kernel"
_ACTOR_SCOPE_KEY = "botcriptofy.actor"
_UNRESOLVED = object()
DEFAULT_MAX_BODY = 1024 * 1024

Endpoint = Callable[..., Awaitable[Any]]


def kernel_of(request: Request | Scope) -> Kernel:
    """Return the kernel generation serving this request."""
    scope = request.scope if isinstance(request, Request) else request
    return scope[KERNEL_SCOPE_KEY]  # type: ignore[no-any-return]


async def current_actor(request: Request) -> Actor | None:
    """Resolve the caller once per request through the ``actor_from_request`` hook."""
    actor = request.scope.get(_ACTOR_SCOPE_KEY, _UNRESOLVED)
    if actor is _UNRESOLVED:
        kernel = kernel_of(request)
        actor = await await_me_maybe(kernel.hook.actor_from_request(kernel=kernel, request=request))
        request.scope[_ACTOR_SCOPE_KEY] = actor
    return actor  # type: ignore[no-any-return]


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


class Route(_StarletteRoute):
    """A Starlette route with declared models, permissions and OpenAPI metadata.

    The endpoint is ``async def endpoint(request, *, body=..., query=...)`` and returns a model,
    a JSON-serialisable value or a Starlette response. ``body`` and ``query`` are passed only when
    their model is declared. ``permission`` (``department:action``) implies ``authenticated``.
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
        super().__init__(
            path,
            self._handle,
            methods=list(methods),
            name=name or endpoint.__name__,
            include_in_schema=include_in_schema,
        )

    async def _handle(self, request: Request) -> Response:
        if self.authenticated:
            await require(request, self.permission)
        kwargs: dict[str, Any] = {}
        if self.query_model is not None:
            try:
                kwargs["query"] = self.query_model.model_validate(dict(request.query_params))
            except ValidationError as error:
                raise validation_problem(error, "query") from None
        if self.body_model is not None:
            raw = await read_body(request, self.max_body)
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


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def problem_response(problem: ProblemError) -> Response:
    return JSONResponse(problem.to_dict(), problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


async def handle_error(request: Request, error: Exception) -> Response:
    """Render any error as problem+json, unless a plugin's ``render_error`` answers first."""
    kernel = request.scope.get(KERNEL_SCOPE_KEY)
    if kernel is not None:
        custom = await await_me_maybe(kernel.hook.render_error(kernel=kernel, request=request, error=error))
        if custom is not None:
            return custom  # type: ignore[no-any-return]
    if isinstance(error, ProblemError):
        return problem_response(error)
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


def openapi_document(routes: Iterable[BaseRoute], *, title: str, version: str) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of every declared route."""
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
        if route.authenticated:
            responses["401"] = {"description": "Unauthorized", **problem}
        if route.permission:
            responses["403"] = {"description": "Forbidden", **problem}
        for status, description in route.responses.items():
            responses.setdefault(str(status), {"description": description, **problem})
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            operation: dict[str, Any] = {"operationId": f"{route.name}_{method.lower()}", "responses": responses}
            if route.summary:
                operation["summary"] = route.summary
            if route.tags:
                operation["tags"] = list(route.tags)
            if parameters:
                operation["parameters"] = parameters
            if route.body_model is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema_of(route, "body")}},
                }
            if route.authenticated:
                operation["security"] = [{"bearer": []}]
            paths.setdefault(template, {})[method.lower()] = operation
    schemas = dict(definitions)
    schemas["Problem"] = _PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
