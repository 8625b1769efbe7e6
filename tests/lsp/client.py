"""A minimal editor: speaks JSON-RPC (LSP base protocol) to `kmr lsp` over pipes.

Requests block until their response arrives (with a timeout, so a hanging server fails
the test instead of the suite); notifications from the server are queued per method.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Editor:
    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "kmr_dsl", "lsp", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        self._id = 0
        self._responses: dict[int, queue.Queue] = {}
        self.notes: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = out.readline()
                if not line:
                    return
                line = line.decode().strip()
                if not line:
                    break
                k, v = line.split(":", 1)
                headers[k.lower()] = v.strip()
            msg = json.loads(out.read(int(headers["content-length"])))
            if "id" in msg and "method" not in msg:
                self._responses.setdefault(msg["id"], queue.Queue()).put(msg)
            elif "id" in msg:  # a request from the server (e.g. workspace/configuration): answer null
                self._send({"jsonrpc": "2.0", "id": msg["id"], "result": None})
            else:
                self.notes.put(msg)

    def _send(self, msg: dict) -> None:
        body = json.dumps(msg).encode()
        with self._lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()

    def request(self, method: str, params, timeout: float = 60):
        self._id += 1
        rid = self._id
        box = self._responses.setdefault(rid, queue.Queue())
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        msg = box.get(timeout=timeout)
        assert "error" not in msg, msg["error"]
        return msg["result"]

    def notify(self, method: str, params) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def diagnostics(self, uri: str, version: int | None = None, timeout: float = 60,
                    want=lambda diags: True) -> list[dict]:
        """The next published diagnostics for `uri` (of `version`, if given) that `want` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.notes.get(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("method") != "textDocument/publishDiagnostics":
                continue
            p = msg["params"]
            if p["uri"] == uri and (version is None or p.get("version") == version) and want(p["diagnostics"]):
                return p["diagnostics"]

    # --- editor actions
    def start(self, root: Path, options: dict | None = None) -> dict:
        caps = self.request("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {},
                                           "initializationOptions": options or {}})
        self.notify("initialized", {})
        return caps

    def open(self, path: Path, text: str, version: int = 1) -> str:
        uri = path.resolve().as_uri()
        self.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "kmr",
                                                              "version": version, "text": text}})
        return uri

    def change(self, uri: str, text: str, version: int) -> None:
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                               "contentChanges": [{"text": text}]})

    def at(self, method: str, uri: str, line: int, char: int):
        return self.request(method, {"textDocument": {"uri": uri}, "position": {"line": line, "character": char}})

    def close(self) -> int:
        try:
            self.request("shutdown", None, timeout=20)
            self.notify("exit", None)
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
