"""bench/audit.py's one table: each figure of issue 17 beside its floor, the ratio and the target,
all from one run. The floors: the same page on a small log (a run of bench/audit.py itself at
--compare-events, in a database of its own), "My keys" with --keys keys, PostgreSQL's own COPY of the
same rows, and verify_audit as it was before issue 17 (model instances, json.dumps per event,
measured here on the same log)."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from decimal import Decimal
from pathlib import Path

from bench._common import log

PAGE_RATIO = 1.5  # a page at --events may cost at most this many times the same page at --compare-events
SEARCH_MS = 50
EXPORT_RATIO = 3.0
GROWTH_MB = 50
TTFB_S = 1.0
VERIFY_GAIN = 2.0


class Small:
    """The pages on a log of --compare-events events: this script again (pages only, its own database,
    --lockstep), whose rounds alternate with this run's, so that both sizes see the same machine:
    a load that comes and goes lands on both, not on one of them (the ratios were 0.5-2.4x for pages
    doing identical work when the two sizes ran minutes apart)."""

    def __init__(self, args) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-audit-")
        self.out = Path(self.tmp.name) / "small.json"
        command = [
            sys.executable,
            str(Path(__file__).with_name("audit.py")),
            *("--events", str(args.compare_events), "--keys", str(args.keys), "--many-keys", str(args.many_keys)),
            *("--requests", str(args.requests), "--warmup", str(args.warmup), "--compare-events", "0"),
            *("--database-url", args.database_url, "--db-name", f"{args.db_name}_small"),
            *("--no-export", "--no-verify", "--busy-month", "--lockstep", "--json", str(self.out)),
        ]
        log(f"pages at {args.compare_events} events, in step with these: {' '.join(command[1:])}")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _expect(self, word: str) -> None:
        while (line := self.process.stdout.readline()) and line.strip() != word:
            print(line, end="", file=sys.stderr)  # anything else it printed
        if not line:
            self.close()
            raise RuntimeError(f"the run at --compare-events ended before saying {word!r} (its log is above)")

    def ready(self) -> None:
        """Wait until the small log is seeded and its pages checked."""
        self._expect("ready")

    def round(self) -> None:
        """One round of its pages, while this run waits."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self._expect("done")

    def finish(self) -> dict:
        """Its report, once it has measured statements and plans (before this run's export is timed)."""
        self.process.stdin.close()
        if self.process.wait(timeout=600) != 0:
            raise RuntimeError(f"the run at --compare-events failed (exit {self.process.returncode})")
        report = json.loads(self.out.read_text())
        self.tmp.cleanup()
        return report

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.tmp.cleanup()


def verify_before(limit: int) -> dict:
    """verify_audit's walk as it was before issue 17 (portal/audit/chain.py at 63127d2): model
    instances in keyset batches of 5,000, the canonical form through json.dumps of a dict, hmac.new;
    over the first `limit` events of this log, to set the rate the new command is held against."""
    from django.conf import settings

    from portal.audit.chain import CHAINED_FIELDS, GENESIS
    from portal.audit.models import AuditEvent

    def value(v):
        if v is None or isinstance(v, (int, str)):
            return v
        if isinstance(v, Decimal):
            return f"{v:.2f}"
        if hasattr(v, "isoformat"):
            return v.astimezone(UTC).isoformat(timespec="microseconds")
        return str(v)

    def digest(prev: str, event) -> str:
        data = {name: value(getattr(event, name)) for name in CHAINED_FIELDS}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hmac.new(settings.AUDIT_HMAC_KEY.encode(), (prev + text).encode(), hashlib.sha256).hexdigest()

    started, previous, expected, last = time.perf_counter(), GENESIS, 1, 0
    while expected <= limit:
        rows = list(AuditEvent.objects.filter(seq__gt=last).order_by("seq")[: min(5000, limit - expected + 1)])
        if not rows:
            break
        for event in rows:
            if event.seq != expected or digest(event.prev_hash, event) != event.hash or event.prev_hash != previous:
                raise RuntimeError(f"the baseline walk found event #{event.seq} broken")
            previous, expected = event.hash, expected + 1
        last = rows[-1].seq
    elapsed = time.perf_counter() - started
    return {"events": expected - 1, "seconds": round(elapsed, 1), "events_per_s": round((expected - 1) / elapsed)}


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """The median of a - b, round by round (the two pages ran back to back in each round, so a load
    that comes and goes lands on both), with its 95% confidence interval from the sign test's order
    statistics: whether `a` costs measurably more than `b`, which a ratio of medians cannot say."""
    diffs = sorted(x - y for x, y in zip(a, b, strict=True))
    n = len(diffs)
    # The interval runs from the (k+1)-th smallest to the (k+1)-th largest difference, k the largest
    # with P(Binomial(n, 1/2) <= k) <= 2.5%: at least 95% coverage, exactly.
    k, below = 0, 0.0
    while below + math.comb(n, k) / 2**n <= 0.025:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k - 1, 0)
    return diffs[k], statistics.median(diffs), diffs[n - 1 - k]


def _row(figure: str, value: float, unit: str, floor: float | None, floor_text: str, target: str, ok: bool) -> dict:
    ratio = round(value / floor, 2) if floor else None
    return {
        "figure": figure,
        "value": f"{value:,.{0 if value >= 1000 else 1}f} {unit}".strip(),
        "floor": floor_text,
        "ratio": ratio,
        "target": target,
        "met": ok,
    }


def _parts(page: dict) -> str:
    """What a page's median is made of: this thread's CPU, time in SQL, and the page's size."""
    return f"CPU {page['cpu_p50_ms']:.1f}, SQL {page['sql_p50_ms']:.1f} ms, {page['kb']:.0f} KB"


def table(report: dict, small: dict | None) -> list[dict]:
    """The rows of the one table, from this run's report and the small log's."""
    rows = []
    pages = {p["name"]: p for p in report["pages"]}
    events, few = report["table"]["events"], (small or {}).get("table", {}).get("events")
    small_pages = {p["name"]: p for p in (small or {}).get("pages", [])}
    for name, page in pages.items():
        other = small_pages.get(name)
        if name.startswith("audit:") and other:
            ratio = page["p50_ms"] / other["p50_ms"]
            floor = f"{other['p50_ms']:.1f} ms at {few:,} events ({_parts(other)})"
            row = _row(f"{name}, p50 at {events:,} events", page["p50_ms"], "ms", other["p50_ms"], floor,
                       f"≤ {PAGE_RATIO}×", ratio <= PAGE_RATIO)  # fmt: skip
            row["value"] += f" ({_parts(page)})"
            rows.append(row)
    keys = sorted((p for n, p in pages.items() if n.startswith("My keys")), key=lambda p: len(p["name"]))
    if len(keys) == 2:
        few_keys, many = keys
        low, middle, high = paired_difference(many["rounds_ms"], few_keys["rounds_ms"])
        same_work = many["statement_count"] == few_keys["statement_count"]
        floor = f"{few_keys['p50_ms']:.1f} ms, {few_keys['name'].split('(')[1][:-1]} ({_parts(few_keys)})"
        row = _row(f"{many['name']}, p50", many["p50_ms"], "ms", few_keys["p50_ms"], floor,
                   "no more: same statements, paired difference not above 0", same_work and low <= 0)  # fmt: skip
        row["value"] += (
            f" ({_parts(many)}; {many['statement_count']} statements against {few_keys['statement_count']};"
            f" paired difference {middle:+.2f} ms, 95% CI {low:+.2f} to {high:+.2f} ms)"
        )
        rows.append(row)
    search = pages.get("audit: key-name search")
    if search:
        rows.append(
            _row(
                f"key-name search, p50 at {events:,} events",
                search["p50_ms"],
                "ms",
                SEARCH_MS,
                f"{SEARCH_MS} ms (target)",
                f"< {SEARCH_MS} ms",
                search["p50_ms"] < SEARCH_MS,
            )
        )
    if export := report.get("export"):
        copy = export["copy"]
        for e in export["exports"]:
            name = {"csv": "CSV", "jsonl": "JSON Lines"}[e["format"]]
            rows.append(
                _row(
                    f"export {name}, all {e['rows']:,} events, through gunicorn",
                    e["total_s"],
                    "s",
                    copy["total_s"],
                    f"{copy['total_s']} s (psql COPY, same rows)",
                    f"≤ {EXPORT_RATIO}×",
                    e["total_s"] <= EXPORT_RATIO * copy["total_s"] and e["complete"],
                )
            )
            rows.append(
                _row(
                    f"export {name}: worker memory growth",
                    e["growth_sampled_mb"],
                    "MB",
                    None,
                    "",
                    f"< {GROWTH_MB} MB",
                    e["growth_sampled_mb"] < GROWTH_MB,
                )
            )
            rows.append(
                _row(
                    f"export {name}: first byte",
                    e["ttfb_s"] * 1000,
                    "ms",
                    None,
                    "",
                    f"< {TTFB_S} s",
                    e["ttfb_s"] < TTFB_S,
                )
            )
    if (verify := report.get("verify")) and (before := report.get("verify_before")):
        rate, old = verify["events_per_s"], before["events_per_s"]
        rows.append(
            _row(
                f"verify_audit over {events:,} events",
                rate,
                "events/s",
                old,
                f"{old:,} events/s (before, first {before['events']:,} events)",
                f"≥ {VERIFY_GAIN}×",
                rate >= VERIFY_GAIN * old,
            )
        )
    return rows


def print_table(rows: list[dict]) -> None:
    """Markdown, as docs/performance.md carries it."""
    print()
    print("| Figure | Measured | Floor | Ratio | Target | Met |")
    print("|---|---:|---|---:|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "–"
        print(
            f"| {r['figure']} | {r['value']} | {r['floor'] or '–'} | {ratio} | {r['target']} | "
            f"{'yes' if r['met'] else '**no**'} |"
        )
