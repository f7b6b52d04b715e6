"""The local test model's native library: built portable, and a crash of it is reported with its
reason instead of killing the test run."""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import sys

import pytest

from tests.llama_server import _exit_reason, missing


def test_a_native_crash_is_named_with_its_remedy():
    proc = subprocess.run([sys.executable, "-c",
                           "import os, signal; os.kill(os.getpid(), signal.SIGILL)"],
                          capture_output=True)
    assert proc.returncode == -signal.SIGILL
    why = _exit_reason(proc.returncode, proc.stderr)
    assert why.startswith("killed by SIGILL") and "make install-llm" in why
    assert _exit_reason(-signal.SIGSEGV, b"") == "killed by SIGSEGV"
    assert _exit_reason(1, b"a\nb\nValueError: no model\n") == "exit code 1: a | b | ValueError: no model"


@pytest.mark.llm
@pytest.mark.skipif(missing() is not None, reason=str(missing()))
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the portable flag set is stated for x86-64")
def test_llama_cpp_is_built_without_cpu_specific_instructions():
    """``make install-llm`` compiles llama.cpp for x86-64 with SSE4.2/AVX/AVX2/FMA/F16C/BMI2 and
    never for the building CPU: ggml's system info lists the instruction sets compiled in."""
    info = subprocess.run([sys.executable, "-c",
                           "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, _exit_reason(info.returncode, info.stderr.encode())
    flags = dict(re.findall(r"([A-Z0-9_]+) = (\d)", info.stdout))
    assert flags.get("AVX2") == "1", info.stdout
    native_only = {k for k, v in flags.items() if v == "1" and k.startswith(("AVX512", "AMX"))}
    assert not native_only, f"built with CPU-specific instruction sets {sorted(native_only)}: " \
                            f"rebuild with `make install-llm` ({info.stdout.strip()})"
