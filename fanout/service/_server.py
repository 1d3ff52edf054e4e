"""Running the service: in the foreground (``fanout serve``) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from fanout.errors import ConfigError

__all__ = ["ServiceServer", "listen", "serve_forever"]


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port), before anything is announced; a
    :class:`ConfigError` naming the fix if the port is taken or the host is not local."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"--host {host}: cannot listen there ({exc}); check the name") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port "
            "(0: a free one) or stop what holds it"
        ) from None
    return sock


def _uvicorn(app: FastAPI, host: str, port: int, *, lifespan: bool = False) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # requests carry bearer tokens: no access log at all
            lifespan="on" if lifespan else "off",
            # Longer than clients' idle keep-alive (httpx: 5 s, load balancers: 60 s), so
            # the server never closes a connection a client is about to reuse (ReadError).
            timeout_keep_alive=75,
            timeout_graceful_shutdown=2,
        )
    )


def serve_forever(app: FastAPI, *, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, running its lifespan (an app built with
    ``close_runner=True`` closes its engine there). Uvicorn then re-raises the signal,
    so a terminated server exits as terminated, after a graceful shutdown. ``sock``: a
    socket :func:`listen` bound already (then ``host``/``port`` only name it)."""
    server = _uvicorn(app, host, port, lifespan=True)
    server.run(sockets=[sock] if sock is not None else None)


class ServiceServer:
    """Serves an app from ``make_app()`` on 127.0.0.1 in a background thread.

    ``make_app`` runs on the server's own event loop (an engine belongs to one loop);
    ``close`` is awaited there when the server stops. Port 0 picks a free port.
    """

    def __init__(
        self,
        make_app: Callable[[], FastAPI],
        *,
        close: Callable[[], object] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._make_app = make_app
        self._close = close
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.servers, "the service is not running"
        port: int = self._server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def _main(self) -> None:
        async def main() -> None:
            try:
                self._server = _uvicorn(self._make_app(), self._host, self._port)
                await self._server.serve()
            finally:
                if self._close is not None:
                    done = self._close()
                    if asyncio.iscoroutine(done):
                        await done

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc

    def start(self) -> ServiceServer:
        self._thread = threading.Thread(target=self._main, name="fanout-service", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while self._server is None or not self._server.started:
            if self._error is not None:
                raise RuntimeError(f"the service did not start: {self._error!r}")
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the service did not start within 30 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
