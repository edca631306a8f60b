"""What the benchmark scripts share: progress output, percentiles, where a run happened, and how a
script stops. Starting the portal, the stand-in and a database is tests/system/harness.py's job."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from tests.system import harness


def log(message: str, tag: str = "bench") -> None:
    """Progress goes to stderr; the report goes to stdout."""
    print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(seconds: list[float], digits: int = 2) -> dict:
    """Durations given in seconds, summarised in milliseconds, rounded for printing and JSON."""
    ms = [s * 1000 for s in seconds]

    def r(v):
        return None if v is None else round(v, digits)

    return {
        "n": len(ms),
        "p50_ms": r(percentile(ms, 50)),
        "p95_ms": r(percentile(ms, 95)),
        "p99_ms": r(percentile(ms, 99)),
        "mean_ms": r(sum(ms) / len(ms)) if ms else None,
        "min_ms": r(min(ms)) if ms else None,
        "max_ms": r(max(ms)) if ms else None,
    }


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def gunicorn_settings(env: dict[str, str]) -> dict:
    """What gunicorn.conf.py resolves to under this environment (no defaults copied here)."""
    code = (
        "import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: c[k] for k in ('workers', 'threads', 'worker_class', 'timeout', 'max_requests')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=harness.ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def machine(db: harness.Database, env: dict[str, str]) -> dict:
    """Where a run happened: on a shared 2-vCPU machine the figures mean little without it."""
    import django

    cpuinfo = meminfo = ""
    with suppress(OSError):
        cpuinfo, meminfo = Path("/proc/cpuinfo").read_text(), Path("/proc/meminfo").read_text()
    model = next((x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if x.startswith("model name")), "")
    ram_mb = next((int(x.split()[1]) // 1024 for x in meminfo.splitlines() if x.startswith("MemTotal:")), None)

    def git(*args: str) -> str:
        with suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", *args], cwd=harness.ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        return ""

    changed = len(git("status", "--porcelain", "--untracked-files=no").splitlines())
    with db.connect() as conn:
        postgresql = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
    return {
        "code": (git("rev-parse", "--short", "HEAD") or "unknown")
        + (f" + {changed} uncommitted file(s)" if changed else ""),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_mb": ram_mb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": postgresql,
        "gunicorn": gunicorn_settings(env),
        "load_average_at_start": load_average(),
    }


def print_machine(m: dict) -> None:
    g = m["gunicorn"]
    print()
    print("Machine")
    print(f"  {m['cpus_usable']} CPUs ({m['cpu_model']}), {m['ram_mb']} MB RAM; {m['platform']}")
    print(f"  Python {m['python']}, Django {m['django']}, {m['postgresql']}; code {m['code']}")
    print(f"  gunicorn {g['workers']} workers x {g['threads']} threads ({g['worker_class']}), timeout {g['timeout']} s")
    print(f"  load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')}")


def write_json(path: Path | None, report: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
        log(f"wrote {path}")


def run_script(main: Callable[[], int]) -> None:
    """Run a script's main: SIGTERM unwinds like Ctrl+C, so the `with` blocks stop and drop what
    the script started (processes by pid, the database, the temporary directory)."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; stopped and removed what this script started")
        sys.exit(130)
