"""OpenAPI: security schemes from the identity plugin; the statuses each operation can give; Idempotency-Key."""

from __future__ import annotations

from pydantic import BaseModel

import botcriptofy_auth
import botcriptofy_storage
from botcriptofy import Route, hookimpl


class NoteIn(BaseModel):
    text: str


class Notes:
    @hookimpl
    def register_routes(self, kernel):
        async def create(request, body: NoteIn):
            return {"text": body.text}

        async def listing(request):
            return []

        async def remove(request):
            return None

        return [
            Route("/v1/notes", create, methods=["POST"], body=NoteIn, status_code=201, responses={409: "Duplicate note"}),
            Route("/v1/notes", listing, authenticated=True),
            Route("/v1/notes/{note_id}", remove, methods=["DELETE"], permission="notes:delete"),
            Route("/internal/jobs", remove, methods=["POST"]),
        ]


class Limiter:
    @hookimpl
    def rate_limiter(self, kernel):
        return object()


async def test_every_operation_documents_503_and_json_bodies_415(kernel_harness):
    harness = await kernel_harness(plugins={"notes": Notes()})
    document = (await harness.client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "503" in operation["responses"], (method, path)
            assert "429" not in operation["responses"], (method, path)  # no rate limiter enabled
    create = document["paths"]["/v1/notes"]["post"]
    assert {"400", "409", "413", "415", "422", "503"} <= set(create["responses"])
    assert create["responses"]["409"]["description"] == "Duplicate note"
    assert create["responses"]["415"]["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}


async def test_a_rate_limiter_adds_429_everywhere(kernel_harness):
    harness = await kernel_harness(plugins={"notes": Notes(), "limiter": Limiter()})
    document = (await harness.client.get("/openapi.json")).json()
    assert all("429" in op["responses"] for ops in document["paths"].values() for op in ops.values())


async def test_unsafe_v1_operations_take_an_idempotency_key(kernel_harness):
    harness = await kernel_harness(plugins={"notes": Notes()})
    paths = (await harness.client.get("/openapi.json")).json()["paths"]

    def takes_key(operation):
        return any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in operation.get("parameters", ()))

    assert takes_key(paths["/v1/notes"]["post"]) and takes_key(paths["/v1/notes/{note_id}"]["delete"])
    assert {"400", "409", "422"} <= set(paths["/v1/notes/{note_id}"]["delete"]["responses"])
    assert not takes_key(paths["/v1/notes"]["get"]) and not takes_key(paths["/internal/jobs"]["post"])


async def test_without_an_identity_plugin_the_scheme_is_a_bearer_token(kernel_harness):
    harness = await kernel_harness(plugins={"notes": Notes()})
    document = (await harness.client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert document["paths"]["/v1/notes"]["get"]["security"] == [{"bearer": []}]


async def test_the_auth_plugin_declares_jwt_and_api_key_schemes(kernel_harness, tmp_path):
    settings = {"storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}, "auth": {"argon2_memory_cost": 1024}}
    harness = await kernel_harness(plugins={"storage": botcriptofy_storage, "auth": botcriptofy_auth, "notes": Notes()}, settings=settings)
    document = (await harness.client.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["bearer"]["bearerFormat"] == "JWT"
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert document["paths"]["/v1/notes"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403"} <= set(document["paths"]["/v1/notes/{note_id}"]["delete"]["responses"])
    assert {"401", "403"} <= set(document["paths"]["/-/plugins"]["get"]["responses"])


async def test_the_encoded_document_follows_each_generation(kernel_harness):
    """/openapi.json is encoded once per generation: disabling a plugin drops its paths from the next answer."""
    harness = await kernel_harness(plugins={"notes": Notes()})
    first = await harness.client.get("/openapi.json")
    assert first.headers["content-type"] == "application/json" and "/v1/notes" in first.json()["paths"]
    assert (await harness.client.get("/openapi.json")).content == first.content
    result = await harness.apply({"plugins": {"disabled": ["notes"]}})
    assert result.applied, result.error
    assert "/v1/notes" not in (await harness.client.get("/openapi.json")).json()["paths"]
    result = await harness.apply({"plugins": {"disabled": []}})
    assert result.applied, result.error
    assert (await harness.client.get("/openapi.json")).json() == first.json()
