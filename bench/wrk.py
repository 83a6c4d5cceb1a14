"""`wrk` runs: a Lua script in, request count, errors, p50/p99 and the server's CPU share out.

wrk (C, `apt-get install -y wrk`) is closed loop: each connection sends its next request
when the last one is answered. One thread (-t1) is plenty and leaves the cores to servers.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import cpu_seconds

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d %.1f %.1f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def create_script(path_format: str, trips: int, key: str | None, comment: str) -> str:
    """Lua for wrk: POST a ticket, rotating over `trips` (path_format takes the trip number)."""
    body = f'{{"subject": "Lost umbrella", "comment": "{comment}"}}'
    auth = f'wrk.headers["Authorization"] = "ApiKey {key}"\n' if key else ""
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{auth}"
        f"local body = [[{body}]]\n"
        "local n = 0\n"
        "request = function()\n"
        "  n = n + 1\n"
        f'  local path = string.format("{path_format}", n % {max(1, trips)})\n'
        "  return wrk.format(nil, path, nil, body)\n"
        "end\n" + WRK_DONE
    )


def get_script(path: str, key: str) -> str:
    return f'wrk.headers["Authorization"] = "ApiKey {key}"\nwrk.path = "{path}"\n' + WRK_DONE


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect/read/write errors, timeouts and non-2xx answers
    p50_ms: float
    p99_ms: float
    cpu_share: float = math.nan  # the server's CPU seconds per wall second meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def wrk(
    url: str, script: str, connections: int, seconds: float, workdir: Path, pid: int | None = None
) -> WrkResult:
    """One wrk run; with the server's `pid`, also how busy the server's CPU was."""
    lua = workdir / f"wrk-{time.monotonic_ns()}.lua"
    lua.write_text(script)
    cpu, began = (cpu_seconds(pid) if pid else math.nan), time.monotonic()
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "30s"]
    proc = await asyncio.create_subprocess_exec(
        *argv, "-s", str(lua), url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out = (await proc.communicate())[0].decode(errors="replace")
    found = re.search(r"^BENCH (.*)$", out, re.M)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    used = cpu_seconds(pid) - cpu if pid else math.nan
    requests, micros, *errors, p50, p99 = found[1].split()
    return WrkResult(
        int(requests),
        int(micros) / 1e6,
        sum(int(e) for e in errors),
        float(p50) / 1000,
        float(p99) / 1000,
        used / (time.monotonic() - began),
    )
