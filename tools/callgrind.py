#!/usr/bin/env python3
"""Instructions per lead, by function: the exchange under valgrind's callgrind.

    python3 tools/callgrind.py [--buyers 10] [--rate 50] [--duration-s 20] [--json FILE]

Starts the same three processes as tools/bench.py (`gavel-mock-buyers`, `gavel serve` on a
generated config, `gavel-load`), but runs the exchange under `valgrind --tool=callgrind` with
instrumentation off. After a warmup run it zeroes the exchange's stats, turns instrumentation on
(`callgrind_control -i on`), runs the measured load, dumps the profile (`callgrind_control -d`)
and divides what it counted by the leads answered in that window.

Instruction counts do not depend on how busy or slow the machine is, so two builds can be
compared on a shared VM where wall-clock profiles are noisy. They count user-space code only:
the kernel's share of a lead (its system calls) is not in them, and under valgrind the exchange
runs some 50 times slower, so the lead rate must stay low (the default 50 leads/s keeps one
worker well below saturation).

The profile file is kept (`--keep DIR`) for `callgrind_annotate` or KCachegrind.
Standard library only; needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the benchmark's process handling, config and load runs)

# Limits: every wait in this script is bounded.
CONTROL_TIMEOUT_S = 30
DUMP_WAIT_S = 30
ANNOTATE_TIMEOUT_S = 120

# Functions that only carry their callees (the thread's entry, the event loop, std glue) are
# left out of the inclusive table, which is about where the work is done.
CARRIERS = re.compile(
    r"(__rust_begin_short_backtrace|thread_start|call_once|start_thread|lang_start|"
    r"^main$|\(below main\)|__libc_start|Worker::run$|net::start$|cli::main$|gavel::main$)"
)
LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?):(.*) \[(.*)\]\s*$")


def control(pid: int, *args: str) -> None:
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True,
                       timeout=CONTROL_TIMEOUT_S, text=True)
    if r.returncode != 0:
        raise bench.BenchError(f"callgrind_control {' '.join(args)} failed: {r.stderr.strip()}")


def complete(dump: Path) -> bool:
    """True when callgrind has finished writing `dump` (its last line is `totals: N`)."""
    try:
        with open(dump, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256))
            tail = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return False
    return bool(tail) and tail[-1].startswith("totals:")


def annotate(path: Path, inclusive: bool) -> tuple[int, dict[str, int]]:
    """Program total and cost per function (functions split over several files are summed for
    self cost; for inclusive cost the largest entry is the function's own)."""
    argv = ["callgrind_annotate", "--threshold=100", "--auto=no",
            f"--inclusive={'yes' if inclusive else 'no'}", str(path.resolve())]
    # From the source tree, callgrind_annotate shortens the paths under it and then counts the
    # inclusive cost of some functions short; from `/` every path stays whole.
    out = subprocess.run(argv, capture_output=True, text=True, timeout=ANNOTATE_TIMEOUT_S,
                         cwd="/")
    if out.returncode != 0:
        raise bench.BenchError(f"callgrind_annotate failed: {out.stderr.strip()}")
    total = 0
    costs: dict[str, int] = {}
    for line in out.stdout.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        m = LINE.match(line)
        if not m:
            continue
        ir, func = int(m.group(1).replace(",", "")), m.group(3).strip()
        costs[func] = max(costs.get(func, 0), ir) if inclusive else costs.get(func, 0) + ir
    return total, costs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buyers", type=int, default=10, help="buyers pinged per lead (default 10)")
    ap.add_argument("--rate", type=int, default=50, help="leads per second (default 50)")
    ap.add_argument("--duration-s", type=int, default=20, help="measured seconds (default 20)")
    ap.add_argument("--warmup-s", type=int, default=3, help="warmup seconds (default 3)")
    ap.add_argument("--connections", type=int, default=16, help="gavel-load connections")
    ap.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in target/release")
    ap.add_argument("--keep", metavar="DIR", help="copy the callgrind profile into DIR")
    ap.add_argument("--json", metavar="FILE", help="write the result as JSON")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not installed (apt-get install valgrind)")

    signal.signal(signal.SIGINT, bench.on_signal)
    signal.signal(signal.SIGTERM, bench.on_signal)
    procs = bench.Procs()
    workdir = Path(tempfile.mkdtemp(prefix="gavel-callgrind-"))
    # Removed however the run ends (the profile is copied out first with --keep): it holds
    # the exchange's journal, a 256 MiB segment and its spare.
    try:
        profile = workdir / "callgrind.out"
        bench.EXCHANGE_WRAPPER[:] = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={profile}",
        ]
        # Valgrind starts slowly; the exchange's health check waits this long.
        bench.START_TIMEOUT_S = 120
        try:
            if not args.no_build:
                bench.log("cargo build --release --bins ...")
                b = subprocess.run(["cargo", "build", "--release", "--bins"], cwd=bench.ROOT,
                                   timeout=bench.BUILD_TIMEOUT_S)
                if b.returncode != 0:
                    raise bench.BenchError("cargo build --release --bins failed")
            fleet = bench.Fleet(procs, workdir, args.buyers, 1, 1)
            ex = bench.Exchange(procs, workdir, fleet, 1)
            if not ex.has_admin:
                raise bench.BenchError("the exchange's operator API did not answer")
            target = f"127.0.0.1:{ex.listen}"
            watch = {"exchange": ex.pid, "buyers": fleet.pid}
            bench.log(f"warmup: {args.rate} leads/s for {args.warmup_s} s ...")
            bench.run_load(procs, workdir, bench.load_argv(target, args.rate, args.warmup_s,
                                                           args.connections),
                           args.warmup_s, watch)
            bench.admin(ex.admin_addr, "POST", "/v1/admin/stats/reset")
            control(ex.pid, "-i", "on")
            bench.log(f"measured: {args.rate} leads/s for {args.duration_s} s under callgrind ...")
            r = bench.run_load(procs, workdir, bench.load_argv(target, args.rate, args.duration_s,
                                                               args.connections),
                               args.duration_s, watch)
            control(ex.pid, "-d")
            # The first dump is the measured window (the one written at exit holds only the
            # shutdown). It is complete when its last line, the totals, is written.
            dump = workdir / f"{profile.name}.1"
            deadline = time.monotonic() + DUMP_WAIT_S
            while not complete(dump):
                if time.monotonic() > deadline:
                    raise bench.BenchError(f"no complete callgrind dump at {dump}")
                time.sleep(0.2)
            control(ex.pid, "-i", "off")
            stats = bench.admin(ex.admin_addr, "GET", "/v1/stats") or {}
            ex.stop()
            fleet.stop()
            leads = int((stats.get("overhead_us") or {}).get("count") or 0)
            if leads == 0:
                raise bench.BenchError("the exchange answered no leads in the measured window")
            total, incl = annotate(dump, True)
            _, excl = annotate(dump, False)
        except (bench.BenchError, bench.Interrupted, subprocess.TimeoutExpired) as e:
            bench.log(f"error: {e}")
            procs.stop_all()
            return 1
        finally:
            procs.stop_all()

        per = lambda v: v / leads  # noqa: E731
        gavel_incl = sorted(((f, c) for f, c in incl.items()
                             if not CARRIERS.search(f) and ("gavel::" in f or "gavel" in f)),
                            key=lambda x: -x[1])[: args.top]
        all_excl = sorted(excl.items(), key=lambda x: -x[1])[: args.top]
        print(f"{leads} leads at {args.rate}/s, {args.buyers} buyers per lead "
              f"(load answered {r['report'].get('answered')})")
        print(f"instructions per lead (whole process, user space): {per(total):,.0f}\n")
        print("inclusive, per lead (a function and what it calls)")
        for f, c in gavel_incl:
            print(f"{per(c):>10,.0f}  {f}")
        print("\nself, per lead (a function's own instructions, inlined code included)")
        for f, c in all_excl:
            print(f"{per(c):>10,.0f}  {f}")
        if args.keep:
            keep = Path(args.keep)
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, keep / "callgrind.out")
            print(f"\nprofile: {keep / 'callgrind.out'} (callgrind_annotate --inclusive=yes FILE)")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "command": " ".join([sys.executable, *sys.argv]),
                "machine": bench.machine_info(),
                "leads": leads,
                "rate": args.rate,
                "buyers": args.buyers,
                "instructions_per_lead": round(per(total)),
                "inclusive_per_lead": {f: round(per(c)) for f, c in gavel_incl},
                "self_per_lead": {f: round(per(c)) for f, c in all_excl},
            }, indent=1) + "\n")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
