"""Run the example apps (``examples/*/app.py``) in subprocesses for tests.

The test process talks to them with ``urllib.request`` only, so nothing in it is touched by
OpenTelemetry's requests/urllib3 instrumentation.
"""

from __future__ import annotations

import json as jsonlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
SHOP_APP = EXAMPLES_DIR / "shop" / "app.py"
INVENTORY_APP = EXAMPLES_DIR / "inventory" / "app.py"

Response = tuple[int, bytes, dict[str, str]]

_STRIPPED_ENV_PREFIXES = ("SENTRY_", "OTEL_")
# No proxies, even if http_proxy is set: the apps are on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def opentelemetry_instrument() -> Path:
    """The ``opentelemetry-instrument`` console script of the running interpreter's env."""
    # No .resolve(): a venv's python is a symlink out of the venv.
    return Path(sys.executable).parent / "opentelemetry-instrument"


def _request(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float
) -> Response:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}


class AppProcess:
    """An example app running in a subprocess, ready (``GET /health`` answered) once built.

    ``script`` is run as ``opentelemetry-instrument <python> <script>`` (``instrument=True``)
    or ``<python> <script>``, where <python> is ``sys.executable``. The child's environment
    is ``os.environ`` without ``SENTRY_*``/``OTEL_*`` variables, updated with ``env``, plus
    ``PYTHONUNBUFFERED=1`` and ``<DIR>_PORT=<port>`` where <DIR> is the script's folder name
    upper-cased (``SHOP_PORT``, ``INVENTORY_PORT``). Its stdout and stderr go, interleaved,
    to a temporary file: see ``output()``.
    """

    def __init__(
        self,
        script: Path,
        env: Mapping[str, str],
        port: int,
        instrument: bool = True,
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        self.script = Path(script)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.instrument = instrument
        self._final_output: str | None = None

        child_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(_STRIPPED_ENV_PREFIXES)
        }
        child_env.update(env)
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env[f"{self.script.parent.name.upper()}_PORT"] = str(port)

        argv = [sys.executable, str(self.script)]
        if instrument:
            argv = [str(opentelemetry_instrument()), *argv]
        self.argv = argv

        fd, log_name = tempfile.mkstemp(prefix=f"{self.script.parent.name}-", suffix=".log")
        self.log_path = Path(log_name)
        try:
            with os.fdopen(fd, "ab") as log:
                self._proc = subprocess.Popen(
                    argv,
                    env=child_env,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        except BaseException:
            self.log_path.unlink(missing_ok=True)
            raise
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                output = self.stop()
                raise RuntimeError(
                    f"{self.script} exited with code {self._proc.returncode} before answering"
                    f" GET /health; output:\n{output}"
                )
            try:
                status, _, _ = self.get("/health", timeout=1.0)
            except OSError:
                status = 0
            if status == 200:
                return
            if time.monotonic() >= deadline:
                output = self.stop()
                raise RuntimeError(
                    f"{self.script} did not answer GET /health on port {self.port} within"
                    f" {timeout:g} s; output:\n{output}"
                )
            time.sleep(0.05)

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> Response:
        """GET ``path``; returns (status, body, headers with lower-cased names), never raises
        for HTTP error statuses."""
        return _request("GET", self.url(path), None, headers or {}, timeout)

    def post(
        self,
        path: str,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """POST ``json`` (serialised; no body when None) to ``path``; like ``get``."""
        all_headers = dict(headers or {})
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers.setdefault("Content-Type", "application/json")
        return _request("POST", self.url(path), body, all_headers, timeout)

    def output(self) -> str:
        """Everything the app printed so far (stdout and stderr interleaved)."""
        if self._final_output is not None:
            return self._final_output
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the whole output.

        Idempotent. The log file is removed; ``output()`` keeps answering.
        """
        if self._final_output is not None:
            return self._final_output
        if self._proc.poll() is None:
            try:
                self._proc.send_signal(signal.SIGTERM)
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        output = self.output()
        self._final_output = output
        self.log_path.unlink(missing_ok=True)
        return output

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AppProcess({self.script.parent.name}, port={self.port}, pid={self.pid})"
