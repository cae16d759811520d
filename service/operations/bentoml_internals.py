"""Every place this server reaches into BentoML's internals: this module, applied from one call (`apply`).

Each patch names what it replaces, why, and the upstream thread. `missing()` lists the patched attributes the
installed BentoML no longer has; `apply` refuses to start with that list (and tests/unit/test_bentoml_internals.py
fails) instead of serving with a patch that silently stopped applying after an upgrade.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

TESTED_WITH = "bentoml 1.4.40"


@dataclass(frozen=True)
class Patch:
    module: str
    attribute: str  # dotted within the module, e.g. "ServiceAppFactory.__call__"
    why: str
    upstream: str

    def target(self) -> Any:
        found: Any = importlib.import_module(self.module)
        for part in self.attribute.split("."):
            found = getattr(found, part)
        return found


FRONT_DOOR = Patch(
    module="_bentoml_impl.server.app",
    attribute="ServiceAppFactory.__call__",
    why="Put our front door (service/operations/frontdoor.py) in front of the ASGI app BentoML builds for each "
        "worker. Middleware added with Service.add_asgi_middleware always runs inside BentoML's own stack (traffic "
        "metrics, an OpenTelemetry span, the access log, a timeout task, a context middleware), which on a "
        "one-image request costs more CPU than the model; our routes need none of it, and admission control and "
        "authentication must answer before any of it runs.",
    upstream="bentoml/BentoML#4761 fixed that order: user middleware comes after the built-in ones, with no public "
             "way to run first",
)
SPREAD_CONNECTIONS = Patch(
    module="_bentoml_impl.server.serving",
    attribute="API_SERVER_NAME",
    why="Give every worker a listening socket of its own (SO_REUSEPORT), so the kernel spreads connections evenly over "
        "the workers. BentoML's supervisor listens on one socket all workers share; each worker accepts whatever is "
        "queued when it wakes, and a burst of new connections (a load balancer's pool, a benchmark's 32) often lands "
        "on one worker, which then does all the work while the others idle. The supervisor's socket is only bound "
        "(the port stays reserved, and set up for SO_REUSEPORT); each worker binds and listens on its own in its place",
    upstream="bentoml/BentoML#4396 asks for SO_REUSEPORT per worker; circus can do it (so_reuseport) but BentoML "
             "passes the socket in a form circus's per-process sockets do not recognise",
)
PATCHES = (FRONT_DOOR, SPREAD_CONNECTIONS)


class BentoMLInternalsChanged(RuntimeError):
    """The installed BentoML lacks something a patch replaces."""


def missing() -> list[str]:
    """The patches whose target the installed BentoML no longer has, each with why it mattered."""
    absent = []
    for patch in PATCHES:
        try:
            patch.target()
        except (ImportError, AttributeError):
            absent.append(f"{patch.module}.{patch.attribute} ({patch.why.split('.')[0]}; {patch.upstream})")
    return absent


def apply(front_door: Callable[[Any], Any]) -> None:
    """Every patch: the front door around each main-service app BentoML builds, and one listening socket per
    worker. Refuses with the list of what moved when a target is missing from the installed BentoML."""
    absent = missing()
    if absent:
        raise BentoMLInternalsChanged(
            f"modelserver was tested with {TESTED_WITH}; the installed BentoML no longer has: {'; '.join(absent)}. "
            "Pin the tested version (constraints.txt) or port service/operations/bentoml_internals.py."
        )
    wrap_apps(front_door)
    reserve_api_socket_for_workers()
    listen_on_a_socket_of_this_workers_own()


def wrap_apps(front_door: Callable[[Any], Any]) -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    build = ServiceAppFactory.__call__
    if getattr(build, "wrapped_by_modelserver", False):
        return

    @functools.wraps(build)
    def build_behind_front_door(self: Any) -> Any:
        app = build(self)
        return front_door(app) if self.is_main else app

    build_behind_front_door.wrapped_by_modelserver = True  # type: ignore[attr-defined]
    ServiceAppFactory.__call__ = build_behind_front_door  # type: ignore[method-assign]


def reserve_api_socket_for_workers() -> None:
    """In the supervisor: the API socket BentoML creates is set up for SO_REUSEPORT and only bound, never listened on."""
    import socket

    from _bentoml_impl.server.serving import API_SERVER_NAME
    from circus.sockets import CircusSocket

    if getattr(CircusSocket, "reserved_by_modelserver", False) or not hasattr(socket, "SO_REUSEPORT"):
        return
    create, bind_and_listen = CircusSocket.__init__, CircusSocket.bind_and_listen

    @functools.wraps(create)
    def create_reserved(self: Any, *args: Any, **kwargs: Any) -> None:
        create(self, *args, **kwargs)
        self.reserved = self.name == API_SERVER_NAME and not self.is_unix
        if self.reserved:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)

    @functools.wraps(bind_and_listen)
    def bind_only(self: Any) -> None:
        if not getattr(self, "reserved", False):
            return bind_and_listen(self)
        self.bind((self.host, self.port))
        self.setblocking(False)
        self.host, self.port = self.getsockname()[:2]

    CircusSocket.__init__ = create_reserved  # type: ignore[method-assign]
    CircusSocket.bind_and_listen = bind_only  # type: ignore[method-assign]
    CircusSocket.reserved_by_modelserver = True  # type: ignore[attr-defined]


def listen_on_a_socket_of_this_workers_own() -> None:
    """In a worker: replace the shared socket it was handed (`--fd N`) with its own, bound to the same address with
    SO_REUSEPORT and listening. Where the shared socket already listens (no reservation), it is served as before."""
    import os
    import socket
    import sys

    if "--fd" not in sys.argv[:-1] or not hasattr(socket, "SO_REUSEPORT"):
        return
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    shared = socket.socket(fileno=fd)
    try:
        if shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) or shared.family not in (socket.AF_INET, socket.AF_INET6):
            return
        own = socket.socket(shared.family, socket.SOCK_STREAM)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(shared.getsockname())
        own.listen(socket.SOMAXCONN)
        own.setblocking(False)
        os.dup2(own.fileno(), fd)  # uvicorn serves fd N: now this worker's own socket
        own.close()
    finally:
        shared.detach()  # the descriptor stays open: it is the one uvicorn serves

