#!/usr/bin/env python3
"""CPU per lead of each thread of the exchange (or of gavel-relay), user and system apart.

Runs the same mock buyers and load as tools/bench.py (its classes, its settings), reads
/proc/PID/task/*/stat before and after the measured stretch, and prints each thread's user and
system CPU per answered lead, its minor page faults, and the exchange's overhead percentiles.
Where bench.py gives the process's CPU per lead, this says which thread spends it and whether in
the engine (user) or in the kernel (system): the worker's sockets, the journal's msync.

    python3 tools/threads.py                       # exchange, 10 buyers, 2,000 leads/s, 10 s
    python3 tools/threads.py --relay               # the same load on gavel-relay
    python3 tools/threads.py --bin-dir /tmp/old/target/release   # another build's binaries

Like bench.py it uses the binaries in target/release (build them first:
cargo build --release --bins). Exits 1 when a process fails to start or the load fails.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def threads(pid: int) -> dict[str, tuple[int, int, int]]:
    """name:tid -> (utime ticks, stime ticks, minor faults) of each thread of `pid`."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        # After the name: state(0) ... minflt(7) ... utime(11) stime(12).
        out[f"{name}:{tid}"] = (int(fields[11]), int(fields[12]), int(fields[7]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--relay", action="store_true", help="measure gavel-relay instead")
    ap.add_argument("--rate", type=int, default=2000, help="leads per second (default 2000)")
    ap.add_argument("--buyers", type=int, default=10, help="buyers per lead (default 10)")
    ap.add_argument("--duration-s", type=int, default=10, help="measured seconds (default 10)")
    ap.add_argument("--warmup-s", type=int, default=3, help="warmup seconds (default 3)")
    ap.add_argument("--bin-dir", type=Path, help="directory of the binaries (default target/release)")
    ap.add_argument("--json", type=Path, help="also write the result as JSON")
    args = ap.parse_args()
    if args.bin_dir:
        bench.RELEASE = args.bin_dir
    # SIGINT and SIGTERM stop every process and remove the work directory, as an error does.
    signal.signal(signal.SIGINT, bench.on_signal)
    signal.signal(signal.SIGTERM, bench.on_signal)
    procs = bench.Procs()
    work = Path(tempfile.mkdtemp(prefix="gavel-threads-"))
    try:
        fleet = bench.Fleet(procs, work, args.buyers, 1, 1)
        ex = bench.Relay(procs, work, fleet) if args.relay else bench.Exchange(procs, work, fleet, 1)
        target = f"127.0.0.1:{ex.listen}"
        watch = {"exchange": ex.pid}
        conns = 16
        bench.run_load(procs, work, bench.load_argv(target, args.rate, args.warmup_s, conns),
                       args.warmup_s, watch)
        if ex.has_admin:
            bench.admin(ex.admin_addr, "POST", "/v1/admin/stats/reset")
        before = threads(ex.pid)
        run = bench.run_load(procs, work, bench.load_argv(target, args.rate, args.duration_s, conns),
                             args.duration_s, watch)
        after = threads(ex.pid)
        stats = bench.admin(ex.admin_addr, "GET", "/v1/stats") if ex.has_admin else None
        ex.stop()
        fleet.stop()
    except (bench.BenchError, bench.Interrupted) as e:
        print(f"threads.py: {e}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        # The exchange's journal is in there: a 256 MiB segment and its spare.
        shutil.rmtree(work, ignore_errors=True)
    answered = max(run["report"]["answered"], 1)
    hz = os.sysconf("SC_CLK_TCK")
    per_us = 1e6 / hz / answered
    rows = []
    for key, (u1, s1, f1) in sorted(after.items()):
        if key not in before:
            continue
        u0, s0, f0 = before[key]
        rows.append({"thread": key.split(":")[0], "user_us_per_lead": (u1 - u0) * per_us,
                     "sys_us_per_lead": (s1 - s0) * per_us, "minor_faults": f1 - f0})
    overhead = bench.percentiles(stats.get("overhead_us")) if isinstance(stats, dict) else None
    what = "gavel-relay" if args.relay else "gavel serve"
    print(f"{what}: {args.buyers} buyers/lead, {args.rate} leads/s, {answered} leads answered in "
          f"{args.duration_s} s (CPU per lead from /proc, {hz} ticks/s)")
    print(f"  {'thread':<18}{'user us':>9}{'sys us':>9}{'minflt':>9}")
    for r in rows:
        print(f"  {r['thread']:<18}{r['user_us_per_lead']:>9.1f}{r['sys_us_per_lead']:>9.1f}"
              f"{r['minor_faults']:>9}")
    if overhead:
        print("  overhead us: " + " ".join(f"{k} {overhead[k]}" for k in ("p50", "p90", "p99", "p999", "max")))
    if args.json:
        args.json.write_text(json.dumps({
            "command": " ".join(sys.argv), "machine": bench.machine_info(), "what": what,
            "rate": args.rate, "buyers": args.buyers, "answered": answered,
            "threads": rows, "overhead_us": overhead,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
