"""wrk, a compiled HTTP load generator, driven from Python: one payload, many connections, the figures parsed.

    run(url, "/digits/classify-image", body, "image/png", seconds=10)

Used for the benchmark's single-payload runs, where a Python generator would compete with the server for the
CPU (loadtest.closedloop stays for runs whose payloads vary). The request body and headers go through a small
Lua script; the generator's own CPU use is measured and reported with every figure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SCRIPT = """
local file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
{headers}
done = function(summary, latency, requests)
  for _, p in pairs({{50, 90, 99}}) do io.write(string.format("P%d %d\\n", p, latency:percentile(p))) end
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, path: str, body: bytes, content_type: str, seconds: float = 10.0, connections: int = 32,
        threads: int = 2, extra_headers: dict[str, str] | None = None, warmup: float = 3.0) -> dict:
    """Requests/s, latency percentiles (ms), non-200 answers and wrk's CPU use (% of one core) for one payload."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as folder:
        body_file, script = Path(folder) / "body", Path(folder) / "request.lua"
        body_file.write_bytes(body)
        headers = {"Content-Type": content_type, **(extra_headers or {})}
        lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
        script.write_text(SCRIPT.format(body=body_file, headers=lines))
        command = ["wrk", f"-t{threads}", f"-c{connections}", "--timeout", "30s", "-s", str(script), url.rstrip("/") + path]
        if warmup:
            subprocess.run([*command[:-1], f"-d{warmup:g}s", command[-1]], capture_output=True, timeout=warmup + 60)
        return _measured([*command[:-1], f"-d{seconds:g}s", command[-1]], seconds)


def _measured(command: list[str], seconds: float) -> dict:
    """Run wrk to completion; its CPU time comes from the kernel's accounting of the finished child (wait4)."""
    with tempfile.TemporaryFile(mode="w+") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if process.returncode:
        raise RuntimeError(f"wrk failed: {text[-500:]}")
    return _parsed(text, usage.ru_utime + usage.ru_stime, seconds)


def _parsed(output: str, cpu_seconds: float, seconds: float) -> dict:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = {int(p): int(us) / 1000 for p, us in re.findall(r"^P(\d+) (\d+)$", output, re.M)}
    # wrk counts the answers that are not 2xx or 3xx itself (a Lua counter would be per thread, and lost)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return {"requests_per_s": round(rate, 1), "p50_ms": round(percentiles[50], 1), "p90_ms": round(percentiles[90], 1),
            "p99_ms": round(percentiles[99], 1), "errors": {"non_200": failed, "socket": socket_errors},
            "generator_cpu_percent": round(100 * cpu_seconds / seconds), "generator": "wrk"}
