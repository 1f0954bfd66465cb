"""The server: a bound loopback socket and uvicorn serving the app on it.

    server = make_server(policy, port=0)           # binds 127.0.0.1 on a free port, or ServeError
    server.start()                                 # serves in a background thread
    ...                                            # OpenAI(base_url=server.url, api_key="x")
    server.stop()

`serve_forever()` serves in the calling thread until `shutdown()` (from another thread) or
Ctrl-C. The socket is bound before uvicorn starts, so a port that cannot be bound is one
clear ServeError and nothing is left half open.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

import uvicorn

from sharpen.serving.app import ServeSettings, build_app


class ServeError(RuntimeError):
    """The server cannot start (e.g. the address cannot be bound); the message says why."""


class SharpenServer:
    def __init__(self, policy: Any, settings: ServeSettings, *, host: str, port: int) -> None:
        self.settings = settings
        self.app = build_app(policy, settings)
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        except OSError as err:
            raise ServeError(f"cannot listen on {host}:{port}: {err}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except (OSError, OverflowError, TypeError) as err:
            sock.close()
            raise ServeError(f"cannot listen on {host}:{port}: {err}") from None
        self.socket = sock
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, backlog=2048,
                                timeout_keep_alive=30, lifespan="on")
        self.uvicorn = uvicorn.Server(config)
        self.thread: Optional[threading.Thread] = None

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client, e.g. http://127.0.0.1:54321/v1"""
        host, port = self.server_address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def serve_forever(self) -> None:
        """Serve in this thread until shutdown() or Ctrl-C."""
        self.uvicorn.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True

    def server_close(self) -> None:
        self.socket.close()

    def start(self, timeout: float = 30.0) -> "SharpenServer":
        """Serve in a background thread; returns once the server accepts requests."""
        self.thread = threading.Thread(target=self.serve_forever, name="sharpen-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.shutdown()
        if self.thread is not None:
            self.thread.join(timeout)
        self.server_close()

    def __enter__(self) -> "SharpenServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def make_server(
    policy: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str = "default",
    task: Any = None,
    max_n: int = 64,
    max_tokens_limit: int = 1024,
    max_body_bytes: int = 1_000_000,
    batch_window: float = 0.005,
    api_key: Optional[str] = None,
    references: Optional[str] = None,
) -> SharpenServer:
    """A bound (not yet serving) OpenAI-compatible server over `policy`; see ServeSettings for
    the options. Raises ServeError when the address cannot be bound."""
    settings = ServeSettings(model_name=model_name, task=task, max_n=max_n, max_tokens_limit=max_tokens_limit,
                             max_body_bytes=max_body_bytes, batch_window=batch_window, api_key=api_key,
                             references=references)
    return SharpenServer(policy, settings, host=host, port=port)
