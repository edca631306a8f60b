"""bench/audit.py's part 2: the export streamed through gunicorn while the worker's memory is
sampled, against `psql`'s `COPY` of the same rows."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from bench._common import log
from tests.system import harness
from tests.system.browser import Client


def status_kb(pid: int, field: str) -> int | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(x.split()[1]) for x in lines if x.startswith(field + ":")), None)


def stream_export(client: Client, worker: int, fmt_: str) -> dict:
    """Stream one export while sampling the worker's RSS every 50 ms; its VmHWM is reset first
    (proc(5): clear_refs 5), so the kernel's own peak is reported too."""
    Path(f"/proc/{worker}/clear_refs").write_text("5")
    baseline, samples, stop = status_kb(worker, "VmRSS"), [], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append(status_kb(worker, "VmRSS") or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0, started, first, size, lines, last = harness.cpu_seconds(worker), time.perf_counter(), None, 0, 0, b""
    head = b""
    try:
        with client.http.get(f"{client.base_url}/audit/export.{fmt_}", stream=True, timeout=(5, 600)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"export.{fmt_}: HTTP {response.status_code}")
            for chunk in response.iter_content(chunk_size=1 << 16):
                first = first or time.perf_counter() - started
                head = head if len(head) > 4096 else head + chunk
                size, lines, last = size + len(chunk), lines + chunk.count(b"\n"), chunk[-1:] or last
    finally:
        total = time.perf_counter() - started
        stop.set()
        sampler.join()
    rows = lines - 1 if fmt_ == "csv" else lines  # CSV: a header line; no seeded field holds a newline
    peak, hwm = max(samples, default=baseline), status_kb(worker, "VmHWM")
    return {
        "format": fmt_,
        "header": head.split(b"\n", 1)[0].decode().strip() if fmt_ == "csv" else None,
        "rows": rows,
        "mb": round(size / 1e6, 1),
        "ends_with_newline": last == b"\n",
        "ttfb_s": round(first or total, 3),
        "total_s": round(total, 2),
        "rows_per_s": round(rows / total),
        "worker_cpu_s": round(harness.cpu_seconds(worker) - cpu0, 2),
        "rss_baseline_mb": round(baseline / 1024, 1),
        "growth_sampled_mb": round((peak - baseline) / 1024, 1),
        "growth_kernel_mb": round((hwm - baseline) / 1024, 1) if hwm else None,
    }


def copy_floor(db: harness.Database, below_seq: int, header: str) -> dict:
    """PostgreSQL's own CSV of the same rows and columns (the CSV export's header, its UTC time
    being created_at), through psql: what the database alone costs."""
    fields = ["created_at" if f == "time_utc" else f for f in header.split(",")]
    if not all(re.fullmatch(r"[a-z_]+", f) for f in fields):
        raise RuntimeError(f"unexpected export header: {header!r}")
    columns = ", ".join(fields)
    query = (
        f"COPY (SELECT {columns} FROM keys_auditevent WHERE seq < {int(below_seq)} ORDER BY seq DESC) "  # noqa: S608
        "TO STDOUT WITH (FORMAT csv, HEADER)"
    )
    started, first, size, lines = time.perf_counter(), None, 0, 0
    with subprocess.Popen(["psql", "-X", "-q", "-d", db.owner_url, "-c", query], stdout=subprocess.PIPE) as proc:
        while chunk := proc.stdout.read(1 << 16):
            first = first or time.perf_counter() - started
            size, lines = size + len(chunk), lines + chunk.count(b"\n")
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"psql COPY failed ({proc.returncode})")
    return {
        "rows": lines - 1,
        "mb": round(size / 1e6, 1),
        "ttfb_s": round(first or total, 3),
        "total_s": round(total, 2),
    }


def measure_export(system: harness.System, auditor: str) -> dict:
    portal = system.add_portal("export", WEB_CONCURRENCY="1", GUNICORN_THREADS="4")
    client = Client(portal.base_url).sign_in(auditor)
    client.get("/audit/")  # the worker has imported everything
    (worker,) = portal.workers()
    exports = []
    for fmt_ in ("csv", "jsonl"):
        log(f"export.{fmt_}: streaming")
        exports.append(stream_export(client, worker, fmt_))
    with system.db.connect() as conn:  # each export holds exactly the events older than its own audit.exported
        marks = conn.execute(
            "SELECT seq, (SELECT count(*) FROM keys_auditevent o WHERE o.seq < e.seq) FROM keys_auditevent e "
            "WHERE action = 'audit.exported' AND actor_username = %s ORDER BY seq DESC LIMIT 2",
            [auditor],
        ).fetchall()
    for export, (_seq, expected) in zip(exports, reversed(marks), strict=True):
        export["complete"] = export["rows"] == expected and export["ends_with_newline"]
    if portal.workers() != [worker]:
        log("warning: the gunicorn worker changed during the exports")
    portal.stop()
    log("psql COPY floor")
    return {"exports": exports, "copy": copy_floor(system.db, marks[-1][0], exports[0]["header"])}
