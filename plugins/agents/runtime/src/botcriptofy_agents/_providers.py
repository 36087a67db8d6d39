"""Model providers: the ``ollama`` provider (the official client) and the hook that adds others."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from botcriptofy import hookspec

from ._spec import answer_token_bound


@runtime_checkable
class ModelProvider(Protocol):
    """Something that turns chat messages into one JSON document shaped by ``schema``.

    Raise any exception when the model cannot answer (the runtime records ``unreachable``); the
    runtime enforces the time budget around the call.
    """

    name: str

    async def complete(
        self, *, host: str, model: str, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], temperature: float
    ) -> str: ...

    async def close(self) -> None: ...


class OllamaProvider:
    """Structured output through the official ``ollama`` ``AsyncClient``: ``format`` is the decision's JSON schema, thinking off."""

    name = "ollama"

    def __init__(
        self, *, max_tokens: int | None = None, keep_alive: str | float | None = "30m", options: Mapping[str, Any] | None = None
    ) -> None:
        self._clients: dict[str, Any] = {}
        self.max_tokens = max_tokens
        self.keep_alive = keep_alive
        self.options: dict[str, Any] = dict(options or {})

    def _client(self, host: str) -> Any:
        client = self._clients.get(host)
        if client is None:
            import ollama

            client = self._clients[host] = ollama.AsyncClient(host=host)
        return client

    def num_predict(self, schema: Mapping[str, Any]) -> int:
        """``max_tokens`` when set, else the longest answer valid against ``schema`` (never cut; see :func:`answer_token_bound`)."""
        if self.max_tokens is not None:
            return self.max_tokens
        try:
            return answer_token_bound(schema)
        except ValueError:
            return 512

    async def complete(
        self, *, host: str, model: str, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any], temperature: float
    ) -> str:
        response = await self._client(host).chat(
            model=model,
            messages=[dict(m) for m in messages],
            format=dict(schema),
            think=False,
            stream=False,
            keep_alive=self.keep_alive,
            options={**self.options, "temperature": temperature, "num_predict": self.num_predict(schema)},
        )
        return str(response.message.content or "")

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client._client.aclose()


class AgentHookSpecs:
    """Hooks the runtime adds: agents declare themselves, and plugins may add model providers."""

    @hookspec
    def register_agents(self, kernel: Any) -> list[Any] | None:
        """Declare the department agents a plugin runs (:class:`botcriptofy_agents.Agent`).

        :return: a list of agents, or None.
        """

    @hookspec(firstresult=True)
    def agents_model_provider(self, kernel: Any, name: str) -> ModelProvider | None:
        """Provide the model provider called ``name`` (the runtime answers ``ollama``).

        Stops at first non-None result.

        :return: the provider, or None when the plugin does not know ``name``.
        """
