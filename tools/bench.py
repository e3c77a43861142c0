#!/usr/bin/env python3
"""The one-command end-to-end benchmark of the gavel exchange.

    python3 tools/bench.py [--quick] [--json FILE] [--plot FILE.svg]

Builds the release binaries, then for each scenario starts three separate processes on
127.0.0.1: `gavel-mock-buyers` (N buyers, fixed latency), `gavel serve` on a generated config
(N buyers on one campaign, so every lead pings N buyers) and `gavel-load --json` (open loop at a
fixed lead rate). Before the exchange runs it measures the floor: `gavel-load` pointed straight
at one mock buyer, once with a ping body (answered after the same fixed latency) and once with a
post body (answered at once), so the exchange's cost is shown against what one round trip costs
on the same machine in the same run.

For every run it reports achieved leads/s, end-to-end latency from gavel-load (from due time and
from the write), the exchange's own internal-overhead percentiles (`GET /v1/stats` on the operator
listener, histograms zeroed with `POST /v1/admin/stats/reset` after a warmup run), the exchange's
CPU per lead (utime+stime from /proc/PID/stat over the measured run, divided by the answered
leads), each process's CPU share, the machine's, and the exchange's RSS sampled through the run.

Standard library only. Every process it starts is stopped at the end, on error and on Ctrl-C;
every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import platform
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Limits: every wait and loop in this script is bounded by one of these.
BUILD_TIMEOUT_S = 1800
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 10
ADMIN_TIMEOUT_S = 5
LOAD_GRACE_S = 40  # a load run may take this long beyond its schedule (its own timeouts are 10 s)
SAMPLE_INTERVAL_S = 0.2
MAX_SAMPLES = 100_000  # per run; at SAMPLE_INTERVAL_S that is over 5 hours
MAX_LOG_TAIL = 4000  # characters of a failed process's log shown in an error

ADMIN_TOKEN = "bench-operator-token"
API_KEY = "sk-bench-0123456789"
CAMPAIGN = "auto-insurance"

# The buyers' habits in every scenario: a fixed, known response time so that the end-to-end
# latency minus that time can be compared with the exchange's own overhead histogram.
BUYER_LATENCY_MS = 1
BUYER_POST_LATENCY_MS = 0
NO_BID_RATE = "0.1"
REJECT_RATE = "0.0"

# A run is called saturated when any of these hold: the load did not get its rate, leads were
# lost, the due-time p99 went past what any healthy run shows on this machine, or any answer was
# a 503 or "other" (see saturation()).
SATURATED_RATE_SHARE = 0.97
SATURATED_LOST_SHARE = 0.005
SATURATED_P99_US = 25_000

# Before each measured run, wait (up to --quiet-wait-s) until processes other than the
# benchmark's own use at most this many cores.
QUIET_OTHERS_CORES = 0.25

# A run during which other processes used more than this many cores is measured again
# (--retries times at most); the least disturbed one is kept and its disturbance reported.
NOISY_OTHERS_CORES = 0.3

# RSS counts as flat when the second half of a run never goes above the first half's highest
# sample by more than this (allocator noise).
RSS_FLAT_SLACK_KIB = 2048

# The ping and post bodies of the floor runs: the shape and size of what the exchange sends.
PING_FLOOR_TEMPLATE = (
    '{"ping_id":"${uid}","campaign":"auto-insurance","vertical":"auto_insurance","test":false,'
    '"timeout_ms":780,"lead":{"state":"${state}","zip":"${zip}","lead_type":"auto","age":${age},'
    '"insured":true}}'
)
POST_FLOOR_TEMPLATE = (
    '{"ping_id":"${uid}","bid_id":"b-1","price":42.5,"campaign":"auto-insurance","test":false,'
    '"lead":{"first_name":"Ana","last_name":"Diaz","email":"${email}","phone":"${phone}",'
    '"street":"12 Main St","city":"${city}","state":"${state}","zip":"${zip}","lead_type":"auto",'
    '"age":${age},"insured":true},"consent":{"trustedform_cert_url":'
    '"https://cert.trustedform.com/${uid}","jornaya_leadid":"${uid}","vertical":"auto_insurance",'
    '"disclosed_buyers":[],"consented_at":"${now}"}}'
)


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the script: stop everything and leave."""


def on_signal(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process the benchmark started, so that all of them are stopped whatever happens."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kw) -> subprocess.Popen:
        # A session of its own: Ctrl-C reaches only this script, which stops the children in order.
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.live.append(p)
        return p

    def forget(self, p: subprocess.Popen) -> None:
        if p in self.live:
            self.live.remove(p)

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGINT) -> None:
        """Ask politely, then firmly; never wait longer than STOP_TIMEOUT_S in all."""
        if p.returncode is None:
            try:
                p.send_signal(sig)
                p.wait(timeout=STOP_TIMEOUT_S / 2)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=STOP_TIMEOUT_S / 2)
                except subprocess.TimeoutExpired:
                    log(f"warning: process {p.pid} did not die")
            except ProcessLookupError:
                pass
        self.forget(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.live)):
            self.stop(p, signal.SIGTERM)


def free_port() -> int:
    """A port on 127.0.0.1 the kernel says is free now (the exchange binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-MAX_LOG_TAIL:]
    except OSError:
        return ""


def read_lines(p: subprocess.Popen, count: int, timeout_s: float) -> list[str]:
    """Read `count` lines from a child's stdout, giving up after `timeout_s`."""
    lines: list[str] = []
    buf = b""
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        while len(lines) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out waiting for {count} lines, got {len(lines)}")
            if not sel.select(timeout=left):
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                raise BenchError(f"process exited after {len(lines)} of {count} lines")
            buf += chunk
            while b"\n" in buf and len(lines) < count:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode(errors="replace"))
    finally:
        sel.close()
    return lines


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may hold spaces: the fields start after its closing parenthesis.
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) in KiB. RssAnon is the heap and stacks; the rest of VmRSS is mostly the
    journal's memory-mapped segment pages, which grow with the records written by design."""
    rss = anon = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
    except OSError:
        return None
    if rss is None:
        return None
    return rss, anon if anon is not None else rss


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, irq) CPU seconds of the whole machine since boot, summed over cores. `irq`
    is hard and soft interrupt time: loopback TCP is largely processed in softirq, which the
    kernel does not charge to any process's utime/stime (the ksoftirqd threads are added
    where a run is measured)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(v) for v in parts[:8]]
    idle = vals[3] + vals[4]
    irq = vals[5] + vals[6]
    return (sum(vals) - idle) / CLK_TCK, sum(vals) / CLK_TCK, irq / CLK_TCK


def wait_quiet(max_s: float, ours: list[int]) -> float:
    """Wait (at most `max_s`) until the rest of the machine leaves about a core and a half idle,
    so a run does not start during someone else's compile. Returns the other processes' CPU
    (in cores) in the last second looked at."""
    deadline = time.monotonic() + max_s
    others = 0.0
    for _ in range(int(max_s) + 1):
        m0 = machine_cpu()
        c0 = sum(proc_cpu_s(p) or 0 for p in ours)
        t0 = time.monotonic()
        time.sleep(1)
        wall = time.monotonic() - t0
        m1 = machine_cpu()
        c1 = sum(proc_cpu_s(p) or 0 for p in ours)
        others = max((m1[0] - m0[0]) - (c1 - c0), 0.0) / wall
        if others <= QUIET_OTHERS_CORES or time.monotonic() >= deadline:
            break
    return others


def ksoftirqd_pids() -> list[int]:
    """The kernel threads that take over softirq work (loopback TCP) when it piles up: their CPU
    is the benchmark's network traffic, not another user's."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().startswith("ksoftirqd/"):
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def machine_info() -> dict:
    info: dict = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_mib"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        out = subprocess.run(["rustc", "--version"], capture_output=True, text=True, timeout=30)
        info["rustc"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# ---------------------------------------------------------------------------------------------
# The operator API


def admin(addr: tuple[str, int], method: str, path: str) -> dict | None:
    """Call the exchange's operator API; None when it is not there (older builds) or fails."""
    try:
        conn = http.client.HTTPConnection(addr[0], addr[1], timeout=ADMIN_TIMEOUT_S)
        conn.request(
            method,
            path,
            body=b"" if method == "POST" else None,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    if resp.status // 100 != 2:
        return None
    if not body:
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return None


def healthy(addr: tuple[str, int]) -> bool:
    try:
        conn = http.client.HTTPConnection(addr[0], addr[1], timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def percentiles(h: dict | None) -> dict | None:
    """The `{count, p50, p90, p99, p999, max, mean}` shape, whatever extra keys it carries."""
    if not isinstance(h, dict):
        return None
    keys = ("count", "p50", "p90", "p99", "p999", "max", "mean")
    if not all(k in h for k in ("p50", "p99")):
        return None
    return {k: h.get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# The pieces of a run


def config_text(buyers: list[tuple[str, tuple[str, str]]], workers: int, listen: int, admin_port: int,
                journal_dir: Path) -> str:
    """N buyers on one exclusive campaign with no filters, so every lead pings all N."""
    out = [
        "# Generated by tools/bench.py: one seller, one campaign, every buyer pinged for every lead.",
        "[server]",
        f'listen = "127.0.0.1:{listen}"',
        f'admin_listen = "127.0.0.1:{admin_port}"',
        f"workers = {workers}",
        "max_body_bytes = 65536",
        "max_in_flight = 10000",
        "max_connections = 20000",
        f"busy_poll_us = {BUSY_POLL_US}",
        "",
        "[admin]",
        f'token = "{ADMIN_TOKEN}"',
        "",
        "[journal]",
        f"dir = {json.dumps(str(journal_dir))}",
        "segment_bytes = 268435456",
        'sync = "interval"',
        "sync_interval_ms = 10",
        "retain_segments = 64",
        "",
        "[[sellers]]",
        'id = "bench-seller"',
        f'api_key = "{API_KEY}"',
        f'campaigns = ["{CAMPAIGN}"]',
        "payout_share = 0.80",
        "",
        "[[campaigns]]",
        f'id = "{CAMPAIGN}"',
        'vertical = "auto_insurance"',
        'method = "ping_post"',
        'sale = "exclusive"',
        "ping_timeout_ms = 800",
        "post_timeout_ms = 2000",
        "reserve_price = 5.00",
        'ping_fields = ["state", "zip", "lead_type", "age", "insured"]',
        'required_fields = ["first_name", "last_name", "phone", "email", "state", "zip"]',
        "require_consent = true",
        "",
    ]
    for name, (ping_url, post_url) in buyers:
        out += [
            "[[buyers]]",
            f'id = "{name}"',
            f'campaigns = ["{CAMPAIGN}"]',
            f'ping_url = "{ping_url}"',
            f'post_url = "{post_url}"',
            "max_connections = 64",
            "",
        ]
    return "\n".join(out)


# `--pin`: the CPU list each kind of process is confined to (`taskset -c`), empty when not pinned.
PIN: dict[str, str] = {}

# `--step-timing`: the exchange built with the `step-timing` feature, in a target directory of
# its own so the plain build in target/release stays as it is.
STEP_TIMING_RELEASE = ROOT / "target" / "step-timing" / "release"
STEP_TIMING = False

# A command the exchange runs under (tools/callgrind.py sets `valgrind --tool=callgrind ...`).
EXCHANGE_WRAPPER: list[str] = []
# `server.busy_poll_us` of the exchange's config (--busy-poll-us); 0 = the default, block at once.
BUSY_POLL_US = 0
# Every lead to the exchange carries an Idempotency-Key of its own (--idempotency-keys).
IDEMPOTENCY_KEYS = False


def pinned(kind: str, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c CPUS` when `--pin` gave `kind` its CPUs (taskset execs the
    program, so the pid is the program's own)."""
    cpus = PIN.get(kind)
    return ["taskset", "-c", cpus, *argv] if cpus else argv


class Fleet:
    """A running `gavel-mock-buyers` process."""

    def __init__(self, procs: Procs, workdir: Path, count: int, threads: int, seed: int) -> None:
        self.procs = procs
        self.log_path = workdir / f"buyers-{count}-{time.monotonic_ns()}.log"
        self.logf = open(self.log_path, "wb")
        self.argv = pinned("buyers", [
            str(RELEASE / "gavel-mock-buyers"),
            "--count", str(count),
            "--latency-ms", str(BUYER_LATENCY_MS),
            "--post-latency-ms", str(BUYER_POST_LATENCY_MS),
            "--no-bid-rate", NO_BID_RATE,
            "--reject-rate", REJECT_RATE,
            "--threads", str(threads),
            "--seed", str(seed),
            "--json",
        ])
        self.p = procs.start(self.argv, stdout=subprocess.PIPE, stderr=self.logf)
        try:
            lines = read_lines(self.p, count, START_TIMEOUT_S)
        except BenchError as e:
            procs.stop(self.p)
            self.logf.close()
            raise BenchError(
                f"gavel-mock-buyers did not start: {e}:\n{tail(self.log_path)}"
            ) from None
        # "buyer-0 http://127.0.0.1:PORT/ping http://127.0.0.1:PORT/post"
        self.buyers: list[tuple[str, tuple[str, str]]] = []
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                procs.stop(self.p)
                self.logf.close()
                raise BenchError(f"gavel-mock-buyers printed an unexpected line: {line!r}")
            self.buyers.append((parts[0], (parts[1], parts[2])))

    @property
    def pid(self) -> int:
        return self.p.pid

    def first_addr(self) -> str:
        return self.buyers[0][1][0].split("//", 1)[1].split("/", 1)[0]

    def stop(self) -> list | None:
        """Stop the fleet and return its own counters (pings, bids, reply delay applied)."""
        self.logf.close()
        if self.p.returncode is None:
            try:
                self.p.send_signal(signal.SIGINT)
                out, _ = self.p.communicate(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.procs.stop(self.p, signal.SIGKILL)
                return None
        else:
            out = b""
        self.procs.forget(self.p)
        for line in reversed(out.decode(errors="replace").splitlines()):
            if line.startswith("["):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None


class Exchange:
    """A running `gavel serve` on a generated config."""

    def __init__(self, procs: Procs, workdir: Path, fleet: Fleet, workers: int) -> None:
        self.procs = procs
        self.listen = free_port()
        self.admin_port = free_port()
        journal = workdir / f"journal-{self.listen}"
        self.config_path = workdir / f"gavel-{len(fleet.buyers)}b-{workers}w.toml"
        self.config_path.write_text(
            config_text(fleet.buyers, workers, self.listen, self.admin_port, journal)
        )
        self.log_path = workdir / f"gavel-{self.listen}.log"
        binary = (STEP_TIMING_RELEASE if STEP_TIMING else RELEASE) / "gavel"
        self.argv = pinned("exchange", [*EXCHANGE_WRAPPER, str(binary), "serve",
                                        "--config", str(self.config_path)])
        self.logf = open(self.log_path, "wb")
        env = None
        self.steps_path = workdir / f"steps-{self.listen}.jsonl"
        if STEP_TIMING:
            env = {**os.environ, "GAVEL_STEP_TIMING": str(self.steps_path)}
        self.p = procs.start(self.argv, stdout=self.logf, stderr=subprocess.STDOUT, cwd=workdir,
                             env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(("127.0.0.1", self.listen)):
            if self.p.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"gavel serve did not come up on 127.0.0.1:{self.listen}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)
        self.admin_addr = ("127.0.0.1", self.admin_port)
        self.has_admin = admin(self.admin_addr, "GET", "/v1/stats") is not None

    @property
    def pid(self) -> int:
        return self.p.pid

    def step_timing(self) -> list[dict]:
        """Each worker's step histograms (`--step-timing`), once the exchange has stopped."""
        try:
            lines = self.steps_path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self) -> None:
        # SIGTERM: `gavel serve` finishes the leads in flight, flushes its journal and exits
        # (SIGINT may be ignored by a process started from a shell's background job).
        self.procs.stop(self.p, signal.SIGTERM)
        self.logf.close()


class Relay:
    """A running `gavel-relay`: the exchange's I/O with none of its engine (`--relay`), on the
    same fleet, measured by the same load and read through the same `GET /v1/stats`."""

    def __init__(self, procs: Procs, workdir: Path, fleet: Fleet) -> None:
        self.procs = procs
        self.config_path = None
        argv = [str(RELEASE / "gavel-relay"), "--listen", "127.0.0.1:0",
                "--ping-timeout-ms", "800", "--post-timeout-ms", "2000",
                "--max-connections", "64", "--reserve", "5.00"]
        for _, (ping_url, post_url) in fleet.buyers:
            argv += ["--buyer", f"{ping_url},{post_url}"]
        # The relay stands where the exchange would: the exchange's CPUs under --pin.
        self.argv = pinned("exchange", argv)
        self.log_path = workdir / f"relay-{time.monotonic_ns()}.log"
        self.logf = open(self.log_path, "wb")
        self.p = procs.start(self.argv, stdout=subprocess.PIPE, stderr=self.logf)
        try:
            line = read_lines(self.p, 1, START_TIMEOUT_S)[0]
        except BenchError as e:
            self.stop()
            raise BenchError(f"gavel-relay did not start: {e}:\n{tail(self.log_path)}") from None
        # "listening 127.0.0.1:PORT"
        parts = line.split()
        if len(parts) != 2 or parts[0] != "listening":
            self.stop()
            raise BenchError(f"gavel-relay printed an unexpected line: {line!r}")
        host, port = parts[1].rsplit(":", 1)
        self.listen = int(port)
        self.admin_addr = (host, self.listen)
        self.has_admin = admin(self.admin_addr, "GET", "/v1/stats") is not None

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self) -> None:
        self.procs.stop(self.p, signal.SIGTERM)
        self.logf.close()


def load_argv(target: str, rate: int, duration_s: int, connections: int,
              template: Path | None = None, warmup_ms: int = 0) -> list[str]:
    argv = [
        str(RELEASE / "gavel-load"),
        "--target", target,
        "--key", API_KEY,
        "--campaign", CAMPAIGN if template is None else "x",
        "--rate", str(rate),
        "--duration-s", str(duration_s),
        "--warmup-ms", str(warmup_ms),
        "--connections", str(connections),
        "--json",
    ]
    if template is not None:
        argv += ["--template", str(template)]
    elif IDEMPOTENCY_KEYS:
        argv.append("--idempotency-keys")
    return pinned("load", argv)


def run_load(procs: Procs, workdir: Path, argv: list[str], duration_s: int,
             watch: dict[str, int]) -> dict:
    """Run gavel-load to completion while sampling CPU and RSS of the watched processes.

    Returns the load tool's JSON report and the samples. The load tool's own CPU comes from
    wait4's rusage, so the tail of its run is not missed.
    """
    out_path = workdir / "load.json"
    err_path = workdir / "load.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        softirqd = ksoftirqd_pids()
        k0 = sum(proc_cpu_s(pid) or 0 for pid in softirqd)
        cpu0 = {name: proc_cpu_s(pid) for name, pid in watch.items()}
        m0 = machine_cpu()
        t0 = time.monotonic()
        p = procs.start(argv, stdout=out, stderr=err)
        deadline = t0 + duration_s + LOAD_GRACE_S
        rss: dict[str, list[tuple[int, int]]] = {name: [] for name in watch}
        rusage = None
        status = None
        # wait4 with WNOHANG returns a (zeroed) rusage whether or not it reaped the child, so
        # whether it did is kept apart: a run cut short must still be killed below.
        reaped = False
        try:
            for _ in range(MAX_SAMPLES):
                pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
                if pid != 0:
                    reaped = True
                    break
                for name, wpid in watch.items():
                    v = proc_rss_kib(wpid)
                    if v is not None:
                        rss[name].append(v)
                if time.monotonic() > deadline:
                    raise BenchError(f"gavel-load ran past {duration_s + LOAD_GRACE_S} s")
                time.sleep(SAMPLE_INTERVAL_S)
            else:
                raise BenchError("gavel-load ran past the sample limit")
        finally:
            if not reaped:
                procs.stop(p, signal.SIGKILL)
            else:
                # wait4 reaped it: tell Popen so it never signals a recycled pid.
                p.returncode = os.waitstatus_to_exitcode(status)
                procs.forget(p)
        wall = time.monotonic() - t0
        m1 = machine_cpu()
        cpu1 = {name: proc_cpu_s(pid) for name, pid in watch.items()}
        k1 = sum(proc_cpu_s(pid) or 0 for pid in softirqd)
    code = p.returncode
    if code != 0:
        raise BenchError(f"gavel-load exited {code}: {tail(err_path)}")
    try:
        report = json.loads(out_path.read_text())
    except ValueError as e:
        raise BenchError(f"gavel-load printed no JSON report: {e}: {tail(err_path)}") from None
    cpu = {
        name: (cpu1[name] - cpu0[name]) if cpu0[name] is not None and cpu1[name] is not None
        else None
        for name in watch
    }
    cpu["load"] = rusage.ru_utime + rusage.ru_stime
    return {
        "report": report,
        "wall_s": wall,
        "cpu_s": cpu,
        "machine_busy_s": m1[0] - m0[0],
        "machine_total_s": m1[1] - m0[1],
        "machine_irq_s": m1[2] - m0[2] + (k1 - k0),
        "rss_kib": rss,
    }


def rss_summary(samples: list[tuple[int, int]]) -> dict | None:
    """Start, end and highest VmRSS and RssAnon; `flat` judges RssAnon (the heap), since the
    journal's mapped pages are meant to grow with what is written."""
    if not samples:
        return None
    anon = [a for _, a in samples]
    half = len(anon) // 2
    first, second = anon[: max(half, 1)], anon[half:]
    flat = max(second) <= max(first) + RSS_FLAT_SLACK_KIB
    return {
        "start_kib": samples[0][0],
        "end_kib": samples[-1][0],
        "max_kib": max(r for r, _ in samples),
        "anon_start_kib": anon[0],
        "anon_end_kib": anon[-1],
        "anon_max_kib": max(anon),
        "samples": len(samples),
        "flat": flat,
    }


def lost(report: dict) -> int:
    return sum(report.get(k, 0) for k in ("errors", "timeouts", "unsent", "in_flight_at_end"))


def saturation(report: dict) -> list[str]:
    """Why a run counts as saturated (empty when it does not)."""
    why = []
    rate = report["rate_per_s"]
    if report["achieved_rate_per_s"] < SATURATED_RATE_SHARE * rate:
        why.append(f"achieved {report['achieved_rate_per_s']:.0f}/s < {SATURATED_RATE_SHARE:.0%}")
    if lost(report) > SATURATED_LOST_SHARE * max(report["scheduled"], 1):
        why.append(f"{lost(report)} leads lost")
    if report["latency_us"]["p99"] > SATURATED_P99_US:
        why.append(f"due-time p99 {report['latency_us']['p99'] / 1000:.1f} ms")
    bad = report.get("overloaded", 0) + report.get("other", 0)
    if bad:
        why.append(f"{bad} answers not sold/unsold")
    return why


# ---------------------------------------------------------------------------------------------
# Runs


def floor_runs(procs: Procs, workdir: Path, rates: list[int], duration_s: int,
               connections: int, seed: int, quiet_s: float) -> dict:
    """gavel-load straight at one mock buyer: the cost of one ping and one post round trip."""
    ping_t = workdir / "floor-ping.json"
    post_t = workdir / "floor-post.json"
    ping_t.write_text(PING_FLOOR_TEMPLATE)
    post_t.write_text(POST_FLOOR_TEMPLATE)
    fleet = Fleet(procs, workdir, 1, 1, seed)
    results: dict = {"fleet_argv": fleet.argv, "runs": []}
    try:
        target = fleet.first_addr()
        for rate in rates:
            for kind, template in (("ping", ping_t), ("post", post_t)):
                argv = load_argv(target, rate, duration_s, connections, template)
                log(f"floor {kind} at {rate}/s ...")
                if quiet_s > 0:
                    wait_quiet(quiet_s, [fleet.pid])
                # Warm the buyer's connections first, as the exchange's runs are warmed.
                run_load(procs, workdir, load_argv(target, rate, 1, connections, template),
                         1, {"buyers": fleet.pid})
                r = run_load(procs, workdir, argv, duration_s, {"buyers": fleet.pid})
                rep = r["report"]
                results["runs"].append({
                    "kind": kind,
                    "rate": rate,
                    "command": " ".join(argv),
                    "template": template.read_text(),
                    "achieved_rate_per_s": rep["achieved_rate_per_s"],
                    "answered": rep["answered"],
                    "lost": lost(rep),
                    "latency_us": rep["latency_us"],
                    "service_us": rep["service_us"],
                    "cpu_s": r["cpu_s"],
                    "machine_cores": r["machine_busy_s"] / max(r["wall_s"], 1e-9),
                })
    finally:
        results["fleet_counters"] = fleet.stop()
    return results


def floor_for(floor: dict, rate: int) -> dict | None:
    """The ping and post floor measured at `rate` (or the nearest rate measured)."""
    runs = floor.get("runs", [])
    if not runs:
        return None
    rates = sorted({r["rate"] for r in runs}, key=lambda x: abs(x - rate))
    best = rates[0]
    pick = {r["kind"]: r for r in runs if r["rate"] == best}
    if "ping" not in pick or "post" not in pick:
        return None
    return {"rate": best, "ping": pick["ping"]["service_us"], "post": pick["post"]["service_us"]}


def exchange_run(procs: Procs, workdir: Path, fleet: Fleet, ex: Exchange, buyers: int,
                 workers: int, rate: int, duration_s: int, warmup_s: int, connections: int,
                 floor: dict, quiet_s: float, retries: int) -> dict:
    """Measure one rate; when other processes took CPU during it, measure again (at most
    `retries` more times) and keep the run they disturbed least."""
    best = None
    attempt = 0
    for attempt in range(retries + 1):
        r = exchange_run_once(procs, workdir, fleet, ex, buyers, workers, rate, duration_s,
                              warmup_s, connections, floor, quiet_s)
        if best is None or r["utilisation"]["others"] < best["utilisation"]["others"]:
            best = r
        if r["utilisation"]["others"] <= NOISY_OTHERS_CORES:
            break
        log(f"  other processes used {r['utilisation']['others']:.2f} cores during the run")
    best["attempts"] = attempt + 1
    return best


def exchange_run_once(procs: Procs, workdir: Path, fleet: Fleet, ex: Exchange, buyers: int,
                      workers: int, rate: int, duration_s: int, warmup_s: int, connections: int,
                      floor: dict, quiet_s: float) -> dict:
    target = f"127.0.0.1:{ex.listen}"
    watch = {"exchange": ex.pid, "buyers": fleet.pid}
    what = "gavel-relay" if isinstance(ex, Relay) else f"exchange, {workers} worker(s)"
    log(f"{what}: {buyers} buyers/lead, {rate} leads/s ...")
    others_before = wait_quiet(quiet_s, [ex.pid, fleet.pid]) if quiet_s > 0 else None
    # Warmup: fill the pools and caches at the measured rate, then zero the exchange's histograms.
    run_load(procs, workdir, load_argv(target, rate, warmup_s, connections), warmup_s, watch)
    reset = admin(ex.admin_addr, "POST", "/v1/admin/stats/reset") if ex.has_admin else None
    argv = load_argv(target, rate, duration_s, connections)
    r = run_load(procs, workdir, argv, duration_s, watch)
    stats = admin(ex.admin_addr, "GET", "/v1/stats") if ex.has_admin else None
    rep = r["report"]
    answered = max(rep["answered"], 1)
    wall = max(r["wall_s"], 1e-9)
    cpu = r["cpu_s"]
    overhead = percentiles(stats.get("overhead_us")) if isinstance(stats, dict) else None
    elapsed = percentiles(stats.get("elapsed_us")) if isinstance(stats, dict) else None
    write = percentiles(stats.get("answer_write_us")) if isinstance(stats, dict) else None
    stages = None
    if isinstance(stats, dict) and isinstance(stats.get("overhead_stages_us"), dict):
        stages = {k: percentiles(v) for k, v in stats["overhead_stages_us"].items()}
    fl = floor_for(floor, rate)
    svc = rep["service_us"]
    known_buyer_us = (BUYER_LATENCY_MS + BUYER_POST_LATENCY_MS) * 1000
    cross = {
        # The exchange's work plus three loopback round trips (seller, ping, post).
        "service_minus_buyer_delay_us": {
            k: svc[k] - known_buyer_us for k in ("p50", "p90", "p99", "p999")
        },
    }
    if fl is not None:
        # The exchange's work plus one loopback round trip (the seller's): the floor runs carry
        # the ping's and the post's round trips and the buyers' delays.
        cross["service_minus_floor_us"] = {
            k: svc[k] - fl["ping"][k] - fl["post"][k] for k in ("p50", "p90", "p99", "p999")
        }
        cross["floor_rate"] = fl["rate"]
    ncpu = os.cpu_count() or 1
    util = {
        "exchange": (cpu["exchange"] or 0) / wall,
        "buyers": (cpu["buyers"] or 0) / wall,
        "load": cpu["load"] / wall,
        "machine": r["machine_busy_s"] / wall,
        "irq": r["machine_irq_s"] / wall,
    }
    util["others"] = max(
        util["machine"] - util["exchange"] - util["buyers"] - util["load"] - util["irq"], 0.0
    )
    # Who is closest to its own limit: the exchange has `workers` event loops, the fleet
    # `buyer_threads`, the load tool one event loop (its pacer mostly sleeps); and all of them
    # share the machine's cores.
    headroom = {
        "exchange": util["exchange"] / workers,
        "buyers": util["buyers"] / fleet_threads(fleet),
        "load": util["load"],
        "machine": util["machine"] / ncpu,
    }
    why = saturation(rep)
    return {
        "buyers": buyers,
        "workers": workers,
        "rate": rate,
        "command": " ".join(argv),
        "exchange_command": " ".join(ex.argv),
        "config": ex.config_path.read_text() if ex.config_path else None,
        "fleet_command": " ".join(fleet.argv),
        "achieved_rate_per_s": rep["achieved_rate_per_s"],
        "answered": rep["answered"],
        "sold": rep["sold"],
        "unsold": rep["unsold"],
        "lost": lost(rep),
        "by_status_code": rep["by_status_code"],
        "max_waiting": rep["max_waiting"],
        "latency_us": rep["latency_us"],
        "service_us": svc,
        "exchange_elapsed_ms": rep["exchange_elapsed_ms"],
        "overhead_us": overhead,
        "elapsed_us": elapsed,
        "overhead_stages_us": stages,
        "answer_write_us": write,
        "stats_reset": reset is not None,
        "cross_check": cross,
        "cpu_s": cpu,
        "cpu_per_lead_us": (cpu["exchange"] or 0) / answered * 1e6,
        "utilisation": util,
        "busiest_share": headroom,
        "busiest": max(headroom, key=lambda k: headroom[k]),
        "rss_exchange": rss_summary(r["rss_kib"]["exchange"]),
        "rss_buyers": rss_summary(r["rss_kib"]["buyers"]),
        "saturated": why,
        "others_cores_before": others_before,
        "wall_s": r["wall_s"],
    }


def fleet_threads(fleet: Fleet) -> int:
    return int(fleet.argv[fleet.argv.index("--threads") + 1])


# ---------------------------------------------------------------------------------------------
# Output


def fmt_us(v) -> str:
    if v is None:
        return "-"
    if v >= 1_000_000:
        return f"{v / 1e6:.1f}s"
    return f"{v / 1000:.1f}ms" if v >= 10_000 else f"{v:.0f}"


def print_table(results: dict) -> None:
    floor = results["floor"]
    print()
    print("floor: gavel-load straight at one mock buyer (service time from the write, us)")
    print(f"{'kind':<6}{'rate':>7}{'achieved':>10}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>9}{'max':>9}")
    for r in floor.get("runs", []):
        s = r["service_us"]
        print(f"{r['kind']:<6}{r['rate']:>7}{r['achieved_rate_per_s']:>10.0f}"
              f"{fmt_us(s['p50']):>8}{fmt_us(s['p90']):>8}{fmt_us(s['p99']):>8}"
              f"{fmt_us(s['p999']):>9}{fmt_us(s['max']):>9}")
    print()
    print("exchange runs (latency in us unless marked; overhead from GET /v1/stats)")
    head = (f"{'buy':>4}{'wk':>3}{'rate':>7}{'achvd':>7} | {'e2e p50':>8}{'p99':>8}{'p99.9':>8}"
            f" | {'svc p50':>8}{'p99':>8} | {'ovh p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}"
            f" | {'svc-flr':>8}{'p99':>8} | {'cpu/ld':>6} {'ex%':>4}{'by%':>4}{'ld%':>4}{'si%':>4}{'ot%':>4}"
            f" | {'rss':>6}{'anon':>6} {'flat':>4} | saturated")
    print(head)
    print("-" * len(head))
    for r in results["runs"]:
        lat, svc, ovh = r["latency_us"], r["service_us"], r["overhead_us"] or {}
        sf = r["cross_check"].get("service_minus_floor_us", {})
        u = r["utilisation"]
        rss = r["rss_exchange"] or {}
        print(
            f"{r['buyers']:>4}{r['workers']:>3}{r['rate']:>7}{r['achieved_rate_per_s']:>7.0f} | "
            f"{fmt_us(lat['p50']):>8}{fmt_us(lat['p99']):>8}{fmt_us(lat['p999']):>8} | "
            f"{fmt_us(svc['p50']):>8}{fmt_us(svc['p99']):>8} | "
            f"{fmt_us(ovh.get('p50')):>8}{fmt_us(ovh.get('p90')):>8}{fmt_us(ovh.get('p99')):>8}"
            f"{fmt_us(ovh.get('p999')):>8}{fmt_us(ovh.get('max')):>8} | "
            f"{fmt_us(sf.get('p50')):>8}{fmt_us(sf.get('p99')):>8} | "
            f"{r['cpu_per_lead_us']:>6.0f} {u['exchange'] * 100:>4.0f}{u['buyers'] * 100:>4.0f}"
            f"{u['load'] * 100:>4.0f}{u['irq'] * 100:>4.0f}{u['others'] * 100:>4.0f} | "
            f"{(rss.get('max_kib') or 0) / 1024:>5.1f}M{(rss.get('anon_max_kib') or 0) / 1024:>5.1f}M"
            f" {'yes' if rss.get('flat') else 'no':>4} | "
            f"{'; '.join(r['saturated']) + ' (busiest: ' + r['busiest'] + ')' if r['saturated'] else 'no'}"
        )
    print()
    print("columns: buy = buyers pinged per lead; wk = exchange workers; e2e = gavel-load latency from")
    print("due time; svc = from the write; ovh = exchange internal overhead; svc-flr = svc minus the")
    print("ping and post floors; cpu/ld = exchange CPU us per lead; ex/by/ld/si/ot% = CPU of exchange,")
    print("buyers, load tool, interrupts (loopback TCP), other processes (100 = one core); rss/anon = max")
    print("exchange VmRSS / RssAnon (heap; VmRSS adds the journal's mapped pages); flat = RssAnon flat.")
    if results["runs"] and not results["runs"][0]["overhead_us"]:
        print("note: the exchange answered no GET /v1/stats; overhead columns are empty.")
    relay_runs = results.get("relay_runs") or []
    if relay_runs:
        print()
        print("gavel-relay runs: the same buyers and load, no engine (the fan-out floor), beside the")
        print("exchange run before each; overhead in us, accounted alike (GET /v1/stats)")
        head = (f"{'buy':>4}{'rate':>7}{'achvd':>7} | {'e2e p50':>8}{'p99':>8} | {'relay p50':>10}{'p90':>8}"
                f"{'p99':>8}{'p99.9':>8} | {'stages p50 i/c/a':>17} | {'gavel p50':>10}{'p99':>8}"
                f" | {'cpu/ld':>6}{'gavel':>7} | {'ot%':>4}")
        print(head)
        print("-" * len(head))
        for r in relay_runs:
            g = next((x for x in reversed(results["runs"]) if x["buyers"] == r["buyers"]
                      and x["rate"] == r["rate"] and x["workers"] == 1), None)
            ovh = r["overhead_us"] or {}
            gov = (g or {}).get("overhead_us") or {}
            st = r["overhead_stages_us"] or {}
            stages = "/".join(fmt_us((st.get(k) or {}).get("p50")) for k in ("intake", "close", "answer"))
            print(
                f"{r['buyers']:>4}{r['rate']:>7}{r['achieved_rate_per_s']:>7.0f} | "
                f"{fmt_us(r['latency_us']['p50']):>8}{fmt_us(r['latency_us']['p99']):>8} | "
                f"{fmt_us(ovh.get('p50')):>10}{fmt_us(ovh.get('p90')):>8}{fmt_us(ovh.get('p99')):>8}"
                f"{fmt_us(ovh.get('p999')):>8} | {stages:>17} | "
                f"{fmt_us(gov.get('p50')):>10}{fmt_us(gov.get('p99')):>8} | "
                f"{r['cpu_per_lead_us']:>6.0f}{(g or {}).get('cpu_per_lead_us', 0):>7.0f} | "
                f"{r['utilisation']['others'] * 100:>4.0f}"
            )
        print("cpu/ld: CPU us per lead of the relay, and of the exchange in the run before it.")


def svg_plot(results: dict, path: Path) -> None:
    """Overhead p50/p99/p99.9 against lead rate at 10 buyers per lead, one line set per worker
    count. Log-scale y. Falls back to service time minus floor when the exchange has no stats."""
    runs = [r for r in results["runs"] if r["buyers"] == 10]
    source = "exchange overhead_us (GET /v1/stats)"
    def value(r, k):
        if r["overhead_us"]:
            return r["overhead_us"].get(k)
        return r["cross_check"].get("service_minus_floor_us", {}).get(k)
    if runs and not any(r["overhead_us"] for r in runs):
        source = "gavel-load service time minus ping+post floor (no exchange stats)"
    W, H = 760, 460
    L, R, T, B = 80, 200, 50, 60
    pw, ph = W - L - R, H - T - B
    rates = sorted({r["rate"] for r in runs}) or [1]
    vals = [v for r in runs for k in ("p50", "p99", "p999") if (v := value(r, k)) and v > 0]
    lo = 10 ** math.floor(math.log10(min(vals))) if vals else 1
    hi = 10 ** math.ceil(math.log10(max(vals))) if vals else 1000
    if hi <= lo:
        hi = lo * 10
    x_max = max(rates) * 1.05
    def x(rate):
        return L + pw * rate / x_max
    def y(v):
        v = max(v, lo)
        return T + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{L}" y="22" font-size="15" font-weight="bold">Gavel internal overhead vs lead rate'
        f' (10 buyers per lead)</text>',
        f'<text x="{L}" y="40" fill="#555">{source}; log scale</text>',
    ]
    # Grid and axes.
    d = lo
    while d <= hi * 1.0001:
        yy = y(d)
        out.append(f'<line x1="{L}" y1="{yy:.1f}" x2="{L + pw}" y2="{yy:.1f}" stroke="#ddd"/>')
        label = f"{d / 1000:g} ms" if d >= 1000 else f"{d:g} µs"
        out.append(f'<text x="{L - 8}" y="{yy + 4:.1f}" text-anchor="end">{label}</text>')
        d *= 10
    for rate in rates:
        xx = x(rate)
        out.append(f'<line x1="{xx:.1f}" y1="{T}" x2="{xx:.1f}" y2="{T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{xx:.1f}" y="{T + ph + 18}" text-anchor="middle">{rate}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">leads/s offered</text>')
    # Series.
    colours = {"p50": "#1f77b4", "p99": "#ff7f0e", "p999": "#d62728"}
    dashes = {1: "", 2: ' stroke-dasharray="6 4"'}
    legend_y = T + 10
    for workers in sorted({r["workers"] for r in runs}):
        series = sorted((r for r in runs if r["workers"] == workers), key=lambda r: r["rate"])
        for k, colour in colours.items():
            pts = [(x(r["rate"]), y(v), r) for r in series if (v := value(r, k)) and v > 0]
            if not pts:
                continue
            dash = dashes.get(workers, ' stroke-dasharray="2 3"')
            path_d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}"
                              for i, (px, py, _) in enumerate(pts))
            out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
            for px, py, r in pts:
                fill = "white" if r["saturated"] else colour
                out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{fill}" '
                           f'stroke="{colour}" stroke-width="1.5"/>')
            label = {"p50": "p50", "p99": "p99", "p999": "p99.9"}[k]
            lx = L + pw + 15
            out.append(f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" '
                       f'stroke="{colour}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{lx + 36}" y="{legend_y + 4}">{label}, {workers} worker'
                       f'{"s" if workers > 1 else ""}</text>')
            legend_y += 18
    lx = L + pw + 15
    out.append(f'<circle cx="{lx + 15}" cy="{legend_y + 6}" r="3.5" fill="white" stroke="#333"/>')
    out.append(f'<text x="{lx + 36}" y="{legend_y + 10}">saturated run</text>')
    # The targets at 2,000 leads/s.
    for v, name in ((30, "p50 target"), (100, "p99 target"), (250, "p99.9 target")):
        if lo <= v <= hi:
            out.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{L + pw}" y2="{y(v):.1f}" '
                       f'stroke="#888" stroke-dasharray="1 3"/>')
            out.append(f'<text x="{L + 4}" y="{y(v) - 3:.1f}" fill="#888" font-size="10">{name} '
                       f'{v} µs</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer: {text}")
    return v


def parse_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}")
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text}")
    return vals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="short runs, fewer rates, one worker count (a smoke test of the setup)")
    ap.add_argument("--json", metavar="FILE", help="write every result as JSON")
    ap.add_argument("--plot", metavar="FILE.svg", help="write an SVG plot of overhead vs rate")
    ap.add_argument("--no-build", action="store_true", help="use the binaries in target/release")
    ap.add_argument("--workers", type=parse_list, help="exchange worker counts (default 1,2)")
    ap.add_argument("--rates", type=parse_list,
                    help="lead rates of the 10-buyer sweep only (default 500,1000,2000,4000,8000,"
                         "10000); other buyer counts run at fixed rates")
    ap.add_argument("--buyers", type=parse_list, help="buyers per lead (default 1,10,50)")
    ap.add_argument("--duration-s", type=positive_int,
                    help="measured seconds per run (default 10)")
    ap.add_argument("--warmup-s", type=positive_int,
                    help="warmup seconds before each run (default 2)")
    ap.add_argument("--connections", type=int, default=256, help="gavel-load connections")
    ap.add_argument("--buyer-threads", type=int, default=1, help="gavel-mock-buyers threads")
    ap.add_argument("--seed", type=int, default=1, help="the mock buyers' seed")
    ap.add_argument("--retries", type=int, default=2,
                    help="measure a run again when other processes disturbed it (default 2)")
    ap.add_argument("--quiet-wait-s", type=float, default=60,
                    help="before each run, wait up to this long for other processes to go quiet "
                         "(0: do not wait)")
    ap.add_argument("--pin", action="store_true",
                    help="confine the exchange to CPU 0 and the buyers and load tool to CPU 1 "
                         "(taskset), so scheduling delay behind them stops counting as overhead; "
                         "use with --workers 1")
    ap.add_argument("--exchange-fifo", type=int, metavar="PRIO",
                    help="run the exchange under SCHED_FIFO at this priority (chrt -f PRIO; "
                         "needs root or CAP_SYS_NICE): the buyers and the load tool can no longer "
                         "preempt it, as on a host whose cores are the exchange's own")
    ap.add_argument("--step-timing", action="store_true",
                    help="run the exchange built with the step-timing feature (target/step-timing) "
                         "and record each worker's per-step wall-clock histograms in the JSON")
    ap.add_argument("--busy-poll-us", type=int, default=0, metavar="US",
                    help="the exchange's server.busy_poll_us: each worker polls without sleeping "
                         "for this long after its last work (default 0)")
    ap.add_argument("--relay", action="store_true",
                    help="after each exchange run, the same run against gavel-relay (the exchange's "
                         "I/O with no engine: the fan-out floor), reported beside it")
    ap.add_argument("--idempotency-keys", action="store_true",
                    help="every lead to the exchange carries an Idempotency-Key of its own, so "
                         "the exchange's key index is in the measure")
    args = ap.parse_args()
    global STEP_TIMING, BUSY_POLL_US, IDEMPOTENCY_KEYS
    STEP_TIMING = args.step_timing
    BUSY_POLL_US = args.busy_poll_us
    IDEMPOTENCY_KEYS = args.idempotency_keys
    if args.exchange_fifo is not None:
        if shutil.which("chrt") is None:
            ap.error("--exchange-fifo needs chrt (util-linux)")
        if not 1 <= args.exchange_fifo <= 99:
            ap.error("--exchange-fifo takes a priority from 1 to 99")
        EXCHANGE_WRAPPER[:] = ["chrt", "-f", str(args.exchange_fifo)]
    if args.pin:
        if shutil.which("taskset") is None:
            ap.error("--pin needs taskset (util-linux)")
        if (os.cpu_count() or 1) < 2:
            ap.error("--pin needs at least two CPUs")
        PIN.update({"exchange": "0", "buyers": "1", "load": "1"})

    quick = args.quick
    workers_list = args.workers or ([1] if quick else [1, 2])
    sweep = args.rates or ([1000, 2000, 4000] if quick else [500, 1000, 2000, 4000, 8000, 10000])
    buyers_list = args.buyers or [1, 10, 50]
    duration_s = args.duration_s or (3 if quick else 10)
    warmup_s = args.warmup_s or (1 if quick else 2)
    floor_s = max(1, duration_s // 2)
    # The fixed-rate scenarios run at the reference rate; 50 buyers also at lower rates
    # to see where that fan-out saturates.
    plan: list[tuple[int, list[int]]] = []
    for n in buyers_list:
        if n == 10:
            plan.append((n, sweep))
        elif n >= 50 and not quick:
            plan.append((n, [500, 1000, 2000]))
        else:
            plan.append((n, [2000]))
    floor_rates = sorted({rate for _, rates in plan for rate in rates})

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="gavel-bench-"))
    # Removed however the run ends: it holds each exchange's journal (a 256 MiB segment and
    # its spare), and an exception the handlers below do not expect must not leave it behind.
    try:
        started = datetime.datetime.now(datetime.timezone.utc)
        results: dict = {
            "date": started.isoformat(timespec="seconds"),
            "command": " ".join([sys.executable, *sys.argv]),
            "machine": machine_info(),
            "settings": {
                "buyer_latency_ms": BUYER_LATENCY_MS,
                "buyer_post_latency_ms": BUYER_POST_LATENCY_MS,
                "no_bid_rate": float(NO_BID_RATE),
                "reject_rate": float(REJECT_RATE),
                "duration_s": duration_s,
                "warmup_s": warmup_s,
                "connections": args.connections,
                "buyer_threads": args.buyer_threads,
                "pinned": dict(PIN),
                "saturated_if": {
                    "achieved_below_share": SATURATED_RATE_SHARE,
                    "lost_above_share": SATURATED_LOST_SHARE,
                    "due_p99_above_us": SATURATED_P99_US,
                    "overloaded_or_other_answers_above": 0,
                },
            },
            "floor": {},
            "runs": [],
            "relay_runs": [],
            "fleets": [],
        }
        code = 0
        try:
            if not args.no_build:
                log("cargo build --release --bins ...")
                b = subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT,
                                   timeout=BUILD_TIMEOUT_S)
                if b.returncode != 0:
                    raise BenchError("cargo build --release --bins failed")
                if STEP_TIMING:
                    log("cargo build --release --bins --features step-timing (target/step-timing) ...")
                    b = subprocess.run(["cargo", "build", "--release", "--bins", "--features",
                                        "step-timing"], cwd=ROOT, timeout=BUILD_TIMEOUT_S,
                                       env={**os.environ,
                                            "CARGO_TARGET_DIR": str(STEP_TIMING_RELEASE.parent)})
                    if b.returncode != 0:
                        raise BenchError("cargo build --features step-timing failed")
            if STEP_TIMING and not (STEP_TIMING_RELEASE / "gavel").exists():
                raise BenchError(f"{STEP_TIMING_RELEASE / 'gavel'} is missing: build without --no-build")
            for name in ("gavel", "gavel-mock-buyers", "gavel-load", "gavel-relay"):
                if not (RELEASE / name).exists():
                    raise BenchError(f"{RELEASE / name} is missing: build without --no-build")

            results["floor"] = floor_runs(procs, workdir, floor_rates, floor_s, args.connections,
                                          args.seed, args.quiet_wait_s)
            for workers in workers_list:
                for n, rates in plan:
                    fleet = Fleet(procs, workdir, n, args.buyer_threads, args.seed)
                    try:
                        ex = Exchange(procs, workdir, fleet, workers)
                        try:
                            if not ex.has_admin:
                                log("note: no operator API (GET /v1/stats) on this build; "
                                    "overhead is taken from service time minus the floor")
                            relay = Relay(procs, workdir, fleet) if args.relay else None
                            try:
                                for rate in rates:
                                    results["runs"].append(exchange_run(
                                        procs, workdir, fleet, ex, n, workers, rate, duration_s,
                                        warmup_s, args.connections, results["floor"],
                                        args.quiet_wait_s, args.retries))
                                    if relay is not None:
                                        results["relay_runs"].append(exchange_run(
                                            procs, workdir, fleet, relay, n, 1, rate, duration_s,
                                            warmup_s, args.connections, results["floor"],
                                            args.quiet_wait_s, args.retries))
                            finally:
                                if relay is not None:
                                    relay.stop()
                        finally:
                            ex.stop()
                            if STEP_TIMING:
                                results.setdefault("step_timing_us", []).append({
                                    "buyers": n, "workers": workers, "rates": rates,
                                    "note": "warmup and measured runs of this exchange together",
                                    "per_worker": ex.step_timing(),
                                })
                    finally:
                        counters = fleet.stop()
                        if counters:
                            # One fleet serves every rate of this buyer count and worker
                            # count (the relay's runs too), warmups included.
                            results["fleets"].append({
                                "buyers": n, "workers": workers, "rates": rates,
                                "relay": bool(args.relay),
                                "note": "totals of every run on this fleet, warmups included",
                                "counters": counters,
                            })
        except Interrupted as e:
            log(f"interrupted ({e}): stopping every process")
            code = 130
        except BenchError as e:
            log(f"error: {e}")
            code = 1
        finally:
            # A second Ctrl-C must not cut the cleanup short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            procs.stop_all()
        results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if not (results["runs"] or results["relay_runs"] or results["floor"].get("runs")):
            # Stopped before any run (a missing binary, an interruption): no empty tables, and
            # no results file that reads as a benchmark.
            log("nothing was measured")
            return code
        print_table(results)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
            log(f"wrote {args.json}")
        if args.plot:
            svg_plot(results, Path(args.plot))
            log(f"wrote {args.plot}")
        return code
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
