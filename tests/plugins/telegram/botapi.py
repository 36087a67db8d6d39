"""A local server speaking the Bot API methods the staff bot uses, for tests and benches.

It records every call (method, parameters, time), serves queued updates to ``getUpdates`` (long
polling, 409 to a second concurrent poller, as Telegram does) and answers 429 with
``parameters.retry_after`` when told to. It is test infrastructure: the bot under test is aiogram's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 999000, "is_bot": True, "first_name": "BotCriptoFy", "username": "botcriptofy_bot"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    token: str


@dataclass
class BotApiServer:
    calls: list[Call] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    throttle: dict[str, list[int]] = field(default_factory=dict)  # method -> retry_after of the next answers
    url: str = ""
    _runner: web.AppRunner | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _update_ids: Any = field(default_factory=lambda: itertools.count(1000))
    _polling: int = 0
    conflicts: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- feeding -------------------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), **update}
        self.updates.append(update)
        self._arrived.set()
        return update

    def message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        language: str = "pt-br",
        username: str | None = None,
    ) -> dict[str, Any]:
        sender = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "language_code": language}
        if username:
            sender["username"] = username
        chat = {"id": chat_id if chat_id is not None else user_id, "type": chat_type}
        return {"message": {"message_id": next(self._ids), "date": int(time.time()), "chat": chat, "from": sender, "text": text}}

    def press(self, user_id: int, data: str, *, chat_id: int, message_id: int, language: str = "pt-br") -> dict[str, Any]:
        sender = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "language_code": language}
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "group" if chat_id < 0 else "private"},
            "text": "...",
        }
        return {"callback_query": {"id": str(next(self._ids)), "from": sender, "chat_instance": "1", "message": message, "data": data}}

    # -- reading -------------------------------------------------------------------------------

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [c.params["text"] for c in self.of("sendMessage") if chat_id is None or int(c.params["chat_id"]) == chat_id]

    # -- serving -------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            text = value if isinstance(value, str) else str(value)
            try:
                params[key] = json.loads(text)
            except ValueError:
                params[key] = text
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        pending = self.throttle.get(method)
        if pending:
            retry_after = pending.pop(0)
            self.calls.append(Call(f"{method}:429", params, time.monotonic(), request.match_info["token"]))
            return web.json_response(
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {retry_after}",
                    "parameters": {"retry_after": retry_after},
                },
                status=429,
            )
        if method == "getUpdates":
            return await self._get_updates(params)
        self.calls.append(Call(method, params, time.monotonic(), request.match_info["token"]))
        return web.json_response({"ok": True, "result": self._result(method, params)})

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        if self._polling:
            self.conflicts += 1
            return web.json_response(
                {"ok": False, "error_code": 409, "description": "Conflict: terminated by other getUpdates request"}, status=409
            )
        self._polling += 1
        try:
            offset = int(params.get("offset") or 0)
            if offset:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            timeout = min(float(params.get("timeout") or 0), 1.0)
            if not self.updates and timeout:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout)
            self.calls.append(Call("getUpdates", params, time.monotonic(), ""))
            return web.json_response({"ok": True, "result": list(self.updates[:100])})
        finally:
            self._polling -= 1

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method in ("sendMessage", "editMessageText", "editMessageReplyMarkup"):
            chat_id = int(params.get("chat_id", 0))
            message: dict[str, Any] = {
                "message_id": int(params.get("message_id") or next(self._ids)),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": BOT_USER,
                "text": params.get("text", "..."),
            }
            if "message_thread_id" in params:
                message["message_thread_id"] = int(params["message_thread_id"])
            return message
        return True
