"""A real ``gguflite serve`` process on a free loopback port, for the server tests.

    with ServeProcess("--parallel", "2") as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none")

The server binds port 0 and names the port it got on stderr (no race for a free port). Its
stderr goes to a file, so a full pipe can never block it; on a failed start the assertion
shows that file.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT = 600.0  # a fresh checkout compiles the Numba kernels before serving (warm-up)
_READY = re.compile(r"listening on (http://\S+)")


class ServeProcess:
    """``gguflite serve --port 0 ARGS...`` on 127.0.0.1 (the embedded default model)."""

    def __init__(self, *args: str):
        self.args = ["--host", "127.0.0.1", "--port", "0", *args]
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)

    def __enter__(self) -> ServeProcess:
        cmd = [sys.executable, "-m", "gguflite.cli.main", "serve", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=os.environ.copy())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            m = _READY.search(self.log())
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise AssertionError(f"gguflite serve did not start:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- raw HTTP with the standard library (malformed bodies, headers, dropped streams) ---------
def _conn(url: str, timeout: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def request(url: str, method: str, path: str, body: bytes | dict | None = None, *,
            headers: dict[str, str] | None = None, timeout: float = 120.0
            ) -> tuple[int, dict[str, str], bytes]:
    """One request; returns (status, headers with lower-case names, body bytes)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = {"Content-Type": "application/json"} | (headers or {})
    conn = _conn(url, timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(url: str, path: str, **kw) -> Any:
    return json.loads(request(url, "GET", path, **kw)[2])


class Stream:
    """A streamed POST: ``lines()`` yields the response's lines as they arrive; leaving the
    ``with`` block closes the connection (a client that goes away mid-stream)."""

    def __init__(self, url: str, path: str, body: dict, *, headers: dict | None = None,
                 timeout: float = 120.0):
        self.conn = _conn(url, timeout)
        self.conn.request("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"} | (headers or {}))
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def lines(self) -> Iterator[str]:
        while True:
            line = self.response.readline()
            if not line:
                return
            yield line.decode().rstrip("\r\n")

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.response.close()
        self.conn.close()
