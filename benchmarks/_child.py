"""Run a command as a child process and measure it on its own: wall, CPU and peak RSS.

CPU and peak RSS come from ``/usr/bin/time``: a forked child's ``ru_maxrss`` would include the
pages it shared with this (large, data-generating) process before ``exec``. On a shared machine
wall time is mostly waiting for a core: compare CPU seconds, and read the load average beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    seconds: float  # wall
    cpu_seconds: float  # user + system of the child
    peak_rss_mb: float
    load: float  # 1-minute load average when the child started
    stdout: str

    def figures(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "load": round(self.load, 1),
        }


def crmctl_argv(url: str, tenant: str, *args: str) -> list[str]:
    """``python -m crmctl`` with the database, tenant and a benchmark actor."""
    return [sys.executable, "-m", "crmctl", "--db", url, "--tenant", tenant, "--actor", "bench", *args]


def measure(argv: list[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run ``argv``; raise with its stderr tail on a non-zero exit."""
    with tempfile.NamedTemporaryFile(prefix="crmctl-bench-usage-") as usage:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", usage.name, *argv],
            capture_output=True,
            text=True,
            check=False,
            env=None if env is None else os.environ | env,
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:6])} ... failed ({proc.returncode}): {proc.stderr[-2000:]}")
        user, system, peak_kb = Path(usage.name).read_text().split()[-3:]
    return Measured(seconds, float(user) + float(system), float(peak_kb) / 1024, load, proc.stdout)
