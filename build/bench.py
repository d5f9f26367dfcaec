#!/usr/bin/env python3
"""Side-by-side load benchmark of the io_uring and Sockets transports. Run it through build/bench.sh.

For each configuration (io_uring/Sockets x default/inline scheduling) in turn: start the server
pinned to CPU 0, wait until it answers, check its endpoints, then for each profile warm up and run
the load generator pinned to CPU 1, measuring over every run the server's CPU time (/proc/PID/stat),
system calls (perf stat) and context switches (/proc/PID/task/*/status). Prints one markdown table
per profile (medians over the runs, plus io_uring/Sockets ratios) and writes
benchmarks/results/YYYY-MM-DD-HHMM-<commit>.md and .json, and a chart of req/s and CPU us/req per
profile as .svg (drawn by hand; `--chart-from FILE.json` redraws it from an earlier run's json without
running anything). Documented in benchmarks/README.md. Python standard library only.
"""
import argparse
import datetime
import http.client
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "PlatformBenchmarks"
PIPELINE_LUA = ROOT / "benchmarks" / "scripts" / "pipeline.lua"
SERVER_CPU, CLIENT_CPU = "0", "1"
START_TIMEOUT_S = 60

# name -> (label, server arguments before --urls)
CONFIGS = {
    "iouring": ("io_uring default", ["--transport", "iouring"]),
    "iouring-inline": ("io_uring inline", ["--transport", "iouring", "--inline"]),
    "sockets": ("Sockets default", ["--transport", "sockets"]),
    "sockets-inline": ("Sockets inline", ["--transport", "sockets", "--inline"]),
}
DEFAULT_CONFIGS = list(CONFIGS)

# The io_uring default with one kernel feature turned off through configuration (run with --configs):
# name -> (label, server arguments, text the transport's startup line must contain).
_IOURING_OPTION = "--Kestrel:Transport:IoUring:"
FEATURE_CONFIGS = {
    "iouring-no-maccept": ("io_uring, multishot accept off", [f"{_IOURING_OPTION}UseMultishotAccept=false"], "single-shot accept"),
    "iouring-no-mrecv": ("io_uring, multishot recv off", [f"{_IOURING_OPTION}UseMultishotReceive=false"], "single-shot recv over"),
    "iouring-no-pbuf": ("io_uring, provided buffers off", [f"{_IOURING_OPTION}UseProvidedBuffers=false"], "single-shot recv into the input pipe"),
    "iouring-no-defer": ("io_uring, DEFER_TASKRUN off", [f"{_IOURING_OPTION}UseDeferTaskRun=false"], "COOP_TASKRUN"),
    "iouring-no-regfd": ("io_uring, registered ring fd off", [f"{_IOURING_OPTION}UseRegisteredRingFd=false"], "unregistered ring fd"),
    "iouring-no-direct": ("io_uring, direct send off", [f"{_IOURING_OPTION}UseDirectSend=false"], "every send through the ring"),
}
for _name, (_label, _args, _) in FEATURE_CONFIGS.items():
    CONFIGS[_name] = (_label, ["--transport", "iouring", *_args])
# The io_uring default logs every feature on.
EXPECTED_FEATURES = {"iouring": "DEFER_TASKRUN, SUBMIT_ALL, NO_SQARRAY, registered ring fd, multishot accept, multishot recv over"}
EXPECTED_FEATURES.update({name: cfg[2] for name, cfg in FEATURE_CONFIGS.items()})

# (row label, io_uring config, its Sockets counterpart)
PAIRS = [("default", "iouring", "sockets"), ("inline", "iouring-inline", "sockets-inline")]

# TechEmpower's request headers.
ACCEPT_TEXT = "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_JSON = "application/json,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"

# name -> path, connection counts, Accept, Connection header, pipeline depth, description
PROFILES = {
    "plaintext": ("/plaintext", [256], ACCEPT_TEXT, "keep-alive", 1, "GET /plaintext, 256 connections, no pipelining"),
    "pipelined": ("/plaintext", [256], ACCEPT_TEXT, "keep-alive", 16, "GET /plaintext, 256 connections, pipeline depth 16"),
    "json": ("/json", [256], ACCEPT_JSON, "keep-alive", 1, "GET /json, 256 connections"),
    "close": ("/plaintext", [64], ACCEPT_TEXT, "close", 1, "GET /plaintext with Connection: close, 64 connections (connection churn)"),
    "sweep": ("/plaintext", [16, 64, 256, 1024, 4096], ACCEPT_TEXT, "keep-alive", 1, "GET /plaintext at 16 to 4096 connections"),
    # Run alone (--profiles static): samples/StaticFiles on io_uring and Sockets, and nginx; see run_static.
    "static": ("/", [64], "*/*", "keep-alive", 1, "GET of one file (4 KiB, 64 KiB, 1 MiB, 100 MiB), 64 connections"),
}
STATIC_SAMPLE = ROOT / "samples" / "StaticFiles"
STATIC_FILES = [("4k.bin", 4 * 1024), ("64k.bin", 64 * 1024), ("1m.bin", 1024 * 1024), ("100m.bin", 100 * 1024 * 1024)]
STATIC_SERVERS = ["iouring", "iouring-inline", "sockets", "sockets-inline", "nginx"]


class BenchError(Exception):
    pass


def log(msg, end="\n"):
    print(msg, end=end, file=sys.stderr, flush=True)


def run_text(cmd, timeout=60, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and p.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` failed ({p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    return p.stdout.strip()


def headers_for(profile, port):
    _, _, accept, connection, _, _ = PROFILES[profile]
    return {"Host": f"127.0.0.1:{port}", "Accept": accept, "Connection": connection}


# ---------------------------------------------------------------- tools and environment

def ensure_tool(command, package):
    """Installs a missing Debian package through apt when root; returns whether the command exists."""
    if shutil.which(command):
        return True
    if os.geteuid() != 0:
        log(f"note: `{command}` missing; install it with: sudo apt-get install -y {package}")
        return False
    log(f"installing {package} (apt) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                   env=env, capture_output=True, timeout=900)
    return shutil.which(command) is not None


def perf_problem():
    """None when `perf stat` can count raw_syscalls:sys_enter here, else the reason it cannot."""
    if not ensure_tool("perf", "linux-perf"):
        return "perf is not installed"
    p = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                       capture_output=True, text=True, timeout=30)
    if parse_perf(p.stderr) is None:
        return "perf cannot count raw_syscalls:sys_enter: " + (p.stderr.strip().splitlines() or ["no output"])[-1]
    return None


def parse_perf(text):
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("raw_syscalls:sys_enter"):
            return int(fields[0]) if fields[0].isdigit() else None
    return None


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        raise BenchError(f"open-file limit is {soft} but {needed} is needed (4096 connections on each side); "
                         f"raise it (ulimit -n {needed}) or drop the sweep profile")


def commit_label():
    """The short commit, with -dirty when tracked files differ from it (results files name it)."""
    commit = run_text(["git", "rev-parse", "--short", "HEAD"], check=False) or "nogit"
    if run_text(["git", "status", "--porcelain", "--untracked-files=no"], check=False):
        commit += "-dirty"
    return commit


def environment(args, dll):
    commit = commit_label()
    cpu = next((line.split(":", 1)[1].strip() for line in run_text(["lscpu"], check=False).splitlines()
                if line.startswith("Model name:")), "unknown")
    runtimes = [line.split()[1] for line in run_text(["dotnet", "--list-runtimes"], check=False).splitlines()
                if line.startswith("Microsoft.NETCore.App ")]
    gen = run_text([args.load_generator, "--version"], check=False) if args.load_generator == "bombardier" else \
        subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit,
        "kernel": os.uname().release,
        "cpu": cpu,
        "dotnet_sdk": run_text(["dotnet", "--version"], check=False),
        "dotnet_runtimes": runtimes,
        "load_generator": gen.strip(),
        "server": str(dll),
        "command": ("build/bench.sh " if os.environ.get("BENCH_SERVER_PIDFILE") else "python3 build/bench.py ")
                   + shlex.join(sys.argv[1:]),
        "runs": args.runs, "duration_s": args.duration, "warmup_s": args.warmup, "warmup_max_s": args.warmup_max,
        "pinning": f"server taskset -c {SERVER_CPU}, load generator taskset -c {CLIENT_CPU}",
    }


def build_sample():
    if not (SAMPLE / "PlatformBenchmarks.csproj").exists():
        raise BenchError(f"{SAMPLE.relative_to(ROOT)}/PlatformBenchmarks.csproj not found; "
                         "use --server-dll PATH to run a prebuilt server")
    log("building samples/PlatformBenchmarks (Release) ...")
    run_text(["dotnet", "build", "-c", "Release", "-nologo", "-v", "quiet", str(SAMPLE)], timeout=1200)
    dll = Path(run_text(["dotnet", "msbuild", str(SAMPLE), "-nologo", "-getProperty:TargetPath",
                         "-p:Configuration=Release"], timeout=300))
    if not dll.is_file():
        raise BenchError(f"build succeeded but {dll} does not exist")
    return dll


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the server under test

def track_pid(pid):
    """Adds a started server to build/bench.sh's pid file (one per line): its trap kills them if we die."""
    pidfile = os.environ.get("BENCH_SERVER_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{pid}\n")


def untrack_pid(pid):
    pidfile = os.environ.get("BENCH_SERVER_PIDFILE")
    if pidfile and os.path.exists(pidfile):
        lines = [line for line in Path(pidfile).read_text().split() if line != str(pid)]
        Path(pidfile).write_text("".join(f"{line}\n" for line in lines))


class Server:
    def __init__(self, dll, config, port, log_dir):
        self.config, self.port = config, port
        self.log_path = Path(log_dir) / f"server-{config}.log"
        self.cmd = ["taskset", "-c", SERVER_CPU, "dotnet", str(dll), *CONFIGS[config][1],
                    "--urls", f"http://127.0.0.1:{port}"]
        self.proc = None

    def start(self):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise BenchError(f"port {self.port} is already in use by another process")
        with open(self.log_path, "wb") as out:  # taskset execs dotnet: proc.pid is the server
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        track_pid(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with code {self.proc.returncode} during startup: "
                                 f"{shlex.join(self.cmd)}\n{self.log_tail()}")
            try:
                fetch(self.port, "/plaintext", {})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"server did not answer on port {self.port} within {START_TIMEOUT_S} s\n"
                                     + self.log_tail())
                time.sleep(0.2)
        self.check_transport()
        self.check_features()

    def check_features(self):
        """A feature configuration whose option was not applied would measure the default twice."""
        expected = EXPECTED_FEATURES.get(self.config)
        if not expected:
            return
        deadline = time.monotonic() + 10
        while True:
            text = self.log_path.read_text(errors="replace")
            started = [line for line in text.splitlines() if "serving with the io_uring transport" in line]
            if started and expected in started[0]:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{CONFIGS[self.config][0]}: the transport's startup line does not say "
                                 f"'{expected}'\n{self.log_tail()}")
            time.sleep(0.2)

    def check_transport(self):
        """An io_uring run that silently fell back to Sockets would compare Sockets with itself."""
        rings = 0
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                rings += os.readlink(fd) == "anon_inode:[io_uring]"
            except OSError:
                pass
        wants_ring = CONFIGS[self.config][1][1] == "iouring"
        if wants_ring and rings == 0:
            raise BenchError(f"{CONFIGS[self.config][0]}: the server has no io_uring instance; the transport "
                             f"fell back to Sockets (io_uring unavailable?)\n{self.log_tail()}")
        if not wants_ring and rings:
            raise BenchError(f"{CONFIGS[self.config][0]}: the server has io_uring instances; --transport sockets "
                             "was not honoured")

    def log_tail(self):
        try:
            return "--- server log (tail) ---\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc:
            untrack_pid(self.proc.pid)


def fetch(port, path, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def validate(server, profiles):
    """Fetches each profile's endpoint once with its own headers and checks the response."""
    label = CONFIGS[server.config][0]
    for profile in profiles:
        path = PROFILES[profile][0]
        try:
            status, headers, body = fetch(server.port, path, headers_for(profile, server.port))
        except OSError as e:
            raise BenchError(f"{label}: GET {path} ({profile}) failed: {e}") from e
        problems = []
        if status != 200:
            problems.append(f"status {status}")
        for name in ("Server", "Date"):
            if not headers.get(name):
                problems.append(f"no {name} header")
        if path == "/plaintext":
            if body != b"Hello, World!":
                problems.append(f"body {body[:100]!r}, expected b'Hello, World!'")
            if not (headers.get("Content-Type") or "").startswith("text/plain"):
                problems.append(f"Content-Type {headers.get('Content-Type')!r}, expected text/plain")
        else:
            try:
                message = json.loads(body).get("message")
            except (ValueError, AttributeError):
                message = None
            if message != "Hello, World!":
                problems.append(f"body {body[:100]!r}, expected {{\"message\":\"Hello, World!\"}}")
            if not (headers.get("Content-Type") or "").startswith("application/json"):
                problems.append(f"Content-Type {headers.get('Content-Type')!r}, expected application/json")
        if problems:
            raise BenchError(f"{label}: GET {path} ({profile}) is not a valid benchmark response: "
                             + "; ".join(problems))


# ---------------------------------------------------------------- measuring

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(stat_path):
    """utime + stime, in clock ticks, from a /proc/PID/stat or /proc/PID/task/TID/stat file."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_us(pid):
    return cpu_ticks(f"/proc/{pid}/stat") * 1_000_000 / CLK_TCK  # all threads


def context_switches(pid):
    """{thread id: voluntary + nonvoluntary context switches} from /proc/PID/task/*/status."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            counts[task.name] = sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        except OSError:
            pass  # the thread ended meanwhile
    return counts


def context_switch_delta(before, after):
    """Per thread, so a thread that exits during the run cannot subtract; its last switches are missed."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


def load_command(gen, profile, port, connections, duration):
    path, _, _, _, depth, _ = PROFILES[profile]
    url = f"http://127.0.0.1:{port}{path}"
    headers = [f"{k}: {v}" for k, v in headers_for(profile, port).items()]
    if gen == "wrk":
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
        if profile.startswith("static"):
            # 64 concurrent 100 MiB responses take seconds each: wrk's 2 s default would count them as errors.
            cmd += ["--timeout", "30s"]
        for h in headers:
            cmd += ["-H", h]
        if depth > 1:
            return cmd + ["-s", str(PIPELINE_LUA), url, "--", str(depth)]
        return cmd + [url]
    cmd = ["bombardier", f"-c{connections}", f"-d{duration}s", "-l", "-p", "r", "-o", "j"]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if not m:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    requests, seconds = int(m.group(1)), to_ms(m.group(2), m.group(3)) / 1000

    def percentile(p):
        # wrk sometimes prints 0.00us for a percentile it lost (wg/wrk#354): report n/a instead.
        pm = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return (to_ms(pm.group(1), pm.group(2)) or None) if pm else None

    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    read = re.search(r"requests in [\d.]+(?:us|ms|s|m), ([\d.]+)([KMGT]?B) read", out)
    bytes_read = float(read.group(1)) * 1024 ** "BKMGT".index(read.group(2)[0]) if read else None
    return {"requests": requests, "seconds": seconds, "bytes_read": bytes_read, "p50_ms": percentile(50), "p99_ms": percentile(99),
            "socket_errors": sum(map(int, se.groups())) if se else 0,
            "non2xx": int(non2xx.group(1)) if non2xx else 0}


def parse_bombardier(out):
    r = json.loads(out)["result"]
    pct = r.get("latency", {}).get("percentiles", {})
    ok = r["req2xx"]
    return {"requests": ok + r["req1xx"] + r["req3xx"] + r["req4xx"] + r["req5xx"] + r["others"],
            "seconds": r["timeTakenSeconds"],
            "p50_ms": pct["50"] / 1000 if "50" in pct else None, "p99_ms": pct["99"] / 1000 if "99" in pct else None,
            "socket_errors": sum(e["count"] for e in r.get("errors", [])),
            "non2xx": r["req1xx"] + r["req3xx"] + r["req4xx"] + r["req5xx"] + r["others"]}


def drive(gen, profile, port, connections, duration):
    cmd = ["taskset", "-c", CLIENT_CPU] + load_command(gen, profile, port, connections, duration)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{gen} did not finish within {duration + 60} s: {shlex.join(cmd)}") from e
    if p.returncode != 0:
        raise BenchError(f"{gen} failed ({p.returncode}): {shlex.join(cmd)}\n{p.stdout}{p.stderr}")
    return parse_wrk(p.stdout) if gen == "wrk" else parse_bombardier(p.stdout)


JIT_WINDOW_S = 3          # warm-up windows in which the tiered JIT must be quiet
JIT_QUIET_TICKS = 1       # at most this many clock ticks (10 ms each) of JIT work in a quiet window
JIT_QUIET_WINDOWS = 2     # consecutive quiet windows that end the warm-up


def jit_ticks(pid):
    """{thread id: utime + stime ticks} of the runtime's tiered-compilation thread(s) alive now (none for nginx)."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith(".NET Tiered"):
                ticks[task.name] = cpu_ticks(task / "stat")
        except OSError:
            pass  # the thread ended meanwhile
    return ticks


def jit_delta(before, after):
    """JIT ticks between two jit_ticks() samples; a thread born in between counts whole (it worked then)."""
    return sum(t - before.get(tid, 0) for tid, t in after.items())


def warmup_text(warmup, warmup_max):
    return (f"a warm-up of {warmup} s and then on until the server's JIT was quiet for "
            f"{JIT_QUIET_WINDOWS * JIT_WINDOW_S} s (at most {warmup_max} s)")


def warm_up(server, gen, profile, connections, args, prefix, notes):
    """
    Drives the profile for --warmup seconds, then on in JIT_WINDOW_S windows until the server's tiered
    JIT has been quiet for JIT_QUIET_WINDOWS windows running (or --warmup-max seconds have passed).
    Under load on one CPU the runtime keeps re-jitting hot methods (tier 0 -> instrumented -> tier 1)
    for 30-40 s; a fixed few-second warm-up measured that compilation as request cost. Returns
    (seconds warmed, settled), settled None for a fixed warm-up; an unsettled one is added to notes.
    """
    if not args.warmup:
        return 0, None
    pid = server.proc.pid
    log(f"{prefix} warm-up {args.warmup} s ...")
    before = jit_ticks(pid)
    drive(gen, profile, server.port, connections, args.warmup)
    elapsed = args.warmup
    if args.warmup_max <= args.warmup:
        return elapsed, None  # a fixed warm-up (--quick, or --warmup-max no longer than --warmup)
    quiet = 1 if jit_delta(before, jit_ticks(pid)) <= JIT_QUIET_TICKS * max(1, args.warmup // JIT_WINDOW_S) else 0
    while quiet < JIT_QUIET_WINDOWS and elapsed + JIT_WINDOW_S <= args.warmup_max:
        before = jit_ticks(pid)
        drive(gen, profile, server.port, connections, JIT_WINDOW_S)
        elapsed += JIT_WINDOW_S
        work = jit_delta(before, jit_ticks(pid))
        quiet = quiet + 1 if work <= JIT_QUIET_TICKS else 0
        log(f"{prefix} warm-up {elapsed} s: JIT {work * 1000 // CLK_TCK} ms in the last {JIT_WINDOW_S} s")
    settled = quiet >= JIT_QUIET_WINDOWS
    if not settled:
        log(f"{prefix} warning: the JIT was still busy after {elapsed} s (--warmup-max); measuring anyway")
        notes.append(f"{prefix}: the JIT was still busy after the {elapsed} s warm-up limit (--warmup-max)")
    return elapsed, settled


def measure(server, gen, profile, connections, duration, count_syscalls):
    """One measured run: the load generator's numbers plus the server's costs over the same interval."""
    pid = server.proc.pid
    perf = None
    if count_syscalls:
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.2)  # let perf attach before the load starts
    try:
        cpu0, ctx0, t0 = cpu_us(pid), context_switches(pid), time.monotonic()
        result = drive(gen, profile, server.port, connections, duration)
        cpu1, ctx1, t1 = cpu_us(pid), context_switches(pid), time.monotonic()
    finally:
        syscalls = None
        if perf:
            perf.send_signal(signal.SIGINT)
            try:
                syscalls = parse_perf(perf.communicate(timeout=15)[1])
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait()
    if server.proc.poll() is not None:
        raise BenchError(f"server exited (code {server.proc.returncode}) during the run\n{server.log_tail()}")
    n = result["requests"]
    return {
        "requests": n,
        "rps": n / result["seconds"] if result["seconds"] else 0.0,
        "cpu_us_per_req": (cpu1 - cpu0) / n if n else None,
        "syscalls_per_req": syscalls / n if n and syscalls is not None else None,
        "ctx_per_req": context_switch_delta(ctx0, ctx1) / n if n else None,
        "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
        "bytes_read": result.get("bytes_read"), "seconds": result["seconds"],
        "errors": result["socket_errors"] + result["non2xx"],
        "socket_errors": result["socket_errors"], "non2xx": result["non2xx"],
        "server_cpu_pct": 100 * (cpu1 - cpu0) / 1e6 / (t1 - t0),
        "server_cpu_us": cpu1 - cpu0, "syscalls": syscalls, "context_switches": context_switch_delta(ctx0, ctx1),
    }


def interleaved_runs(servers, gen, profile, connections, args, count_syscalls, prefixes, notes, describe):
    """
    Warms every server up for this profile, then measures --runs rounds, each round going through
    the servers in turn (run 1 of each, then run 2 of each, ...): on a shared machine whose speed
    drifts over minutes, servers measured one after another would compare different machines.
    describe(r) annotates a run and returns its progress text. Returns {key: [runs]}.
    """
    warmed = {k: warm_up(s, gen, profile, connections, args, prefixes[k], notes) for k, s in servers.items()}
    these = {k: [] for k in servers}
    for i in range(1, args.runs + 1):
        for key, server in servers.items():
            log(f"{prefixes[key]} run {i}/{args.runs} ...", end=" ")
            r = measure(server, gen, profile, connections, args.duration, count_syscalls)
            log(describe(r))
            r.update(config=key, profile=profile, connections=connections, run=i,
                     warmup_s=warmed[key][0], jit_settled=warmed[key][1])
            these[key].append(r)
    return these


# ---------------------------------------------------------------- reporting

METRICS = ["rps", "cpu_us_per_req", "syscalls_per_req", "ctx_per_req", "p50_ms", "p99_ms", "server_cpu_pct"]


def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    s = {k: median(runs, k) for k in METRICS}
    s["errors"] = sum(r["errors"] for r in runs)
    return s


def fmt(value, digits):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def profile_tables(profile, summaries, configs):
    """summaries: {(config, connections): summary}. Returns the markdown for one profile."""
    lines = [f"### {profile}: {PROFILES[profile][5]}", "",
             "| Configuration | Conns | req/s | CPU us/req | syscalls/req | ctx sw/req | p50 ms | p99 ms | errors | server CPU |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in PROFILES[profile][1]:
        for config in configs:
            s = summaries.get((config, c))
            if s:
                lines.append(f"| {CONFIGS[config][0]} | {c} | {fmt(s['rps'], 0)} | {fmt(s['cpu_us_per_req'], 2)} "
                             f"| {fmt(s['syscalls_per_req'], 2)} | {fmt(s['ctx_per_req'], 3)} | {fmt(s['p50_ms'], 2)} "
                             f"| {fmt(s['p99_ms'], 2)} | {s['errors']} | {fmt(s['server_cpu_pct'], 0)}% |")
    ratio_rows = []
    for c in PROFILES[profile][1]:
        for label, io, so in PAIRS:
            a, b = summaries.get((io, c)), summaries.get((so, c))
            if a and b:
                ratio_rows.append(f"| {label} | {c} | {ratio(a['rps'], b['rps'])} "
                                  f"| {ratio(a['cpu_us_per_req'], b['cpu_us_per_req'])} "
                                  f"| {ratio(a['syscalls_per_req'], b['syscalls_per_req'])} |")
    if ratio_rows:
        lines += ["", "| io_uring / Sockets | Conns | req/s | CPU us/req | syscalls/req |",
                  "| --- | ---: | ---: | ---: | ---: |"] + ratio_rows
    feature_rows = []
    for c in PROFILES[profile][1]:
        base = summaries.get(("iouring", c))
        for name in FEATURE_CONFIGS:
            a = summaries.get((name, c))
            if a and base:
                feature_rows.append(f"| {FEATURE_CONFIGS[name][0]} | {c} | {ratio(a['rps'], base['rps'])} "
                                    f"| {ratio(a['cpu_us_per_req'], base['cpu_us_per_req'])} "
                                    f"| {ratio(a['syscalls_per_req'], base['syscalls_per_req'])} "
                                    f"| {ratio(a['p99_ms'], base['p99_ms'])} |")
    if feature_rows:
        lines += ["", "| Feature off / io_uring default (all on) | Conns | req/s | CPU us/req | syscalls/req | p99 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"] + feature_rows
    return "\n".join(lines) + "\n"


def write_results(results_dir, env, tables, runs, notes):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    base = Path(results_dir) / f"{stamp}-{env['commit']}"
    base.parent.mkdir(parents=True, exist_ok=True)
    raw = ["| Configuration | Profile | Conns | Run | requests | req/s | server CPU us | syscalls | ctx sw "
           "| p50 ms | p99 ms | socket errors | non-2xx |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        raw.append(f"| {CONFIGS[r['config']][0]} | {r['profile']} | {r['connections']} | {r['run']} | {r['requests']} "
                   f"| {fmt(r['rps'], 0)} | {fmt(r['server_cpu_us'], 0)} | {fmt(r['syscalls'], 0)} "
                   f"| {r['context_switches']} | {fmt(r['p50_ms'], 3)} | {fmt(r['p99_ms'], 3)} "
                   f"| {r['socket_errors']} | {r['non2xx']} |")
    md = [f"# Load benchmark {env['date']}", "",
          f"- Commit: `{env['commit']}`",
          f"- Kernel: {env['kernel']}",
          f"- CPU: {env['cpu']}",
          f"- .NET: SDK {env['dotnet_sdk']}, runtimes {', '.join(env['dotnet_runtimes'])}",
          f"- Load generator: {env['load_generator']}",
          f"- Server: `{env['server']}`",
          f"- Command: `{env['command']}`",
          f"- {env['runs']} run(s) of {env['duration_s']} s after {warmup_text(env['warmup_s'], env['warmup_max_s'])}; medians; "
          "runs interleaved (all servers up, each run goes round the configurations in turn); "
          f"{env['pinning']}"]
    md += [f"- Note: {n}" for n in notes]
    chart = write_chart(base.with_suffix(".svg"), runs, env)
    md += ["", "## Results", "", f"![req/s and CPU us/req per configuration]({chart.name})", "",
           *tables, "## Raw runs", "", *raw, ""]
    base.with_suffix(".md").write_text("\n".join(md))
    base.with_suffix(".json").write_text(json.dumps({"environment": env, "notes": notes, "runs": runs}, indent=1))
    return base.with_suffix(".md")


# ---------------------------------------------------------------- chart (hand-written SVG)

# Fill colours per configuration: io_uring blues, Sockets oranges; inline is the lighter shade.
COLORS = {"iouring": "#1f4e96", "iouring-inline": "#6f9fd8", "sockets": "#c0571b", "sockets-inline": "#f0a35e",
          "iouring-no-maccept": "#2a9d8f", "iouring-no-mrecv": "#8ab17d", "iouring-no-pbuf": "#e9c46a",
          "iouring-no-defer": "#9b5de5", "iouring-no-regfd": "#577590"}
CHART_PANELS = [("rps", "requests/s (higher is better)"), ("cpu_us_per_req", "server CPU us/request (lower is better)")]
PANEL_W, PANEL_H, PANEL_GAP = 470, 250, 40
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 34, 40


def nice_step(top, ticks=5):
    """A 1/2/2.5/5 x 10^n step that divides 0..top into about `ticks` intervals."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def short_number(value):
    """1234567 -> 1.23M, 45600 -> 45.6k, 12.345 -> 12.3: bar labels must stay narrow."""
    if value is None:
        return "n/a"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e4:
        return f"{value / 1e3:.0f}k"
    if a >= 1e3:
        return f"{value / 1e3:.1f}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def tick_label(value, step):
    """Axis labels with only the decimals the step needs: 0, 50k, 1.50M, 2.5, 0.20."""
    if value == 0:
        return "0"
    if step >= 1000:
        return short_number(value)
    decimals = max(0, -math.floor(math.log10(step)) + (0 if float(step / 10 ** math.floor(math.log10(step))).is_integer() else 1))
    return f"{value:.{decimals}f}"


def svg_text(x, y, text, size=12, anchor="middle", weight="normal", fill="#222", extra=""):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}"{extra}>{escape(str(text))}</text>')


def chart_panel(x0, y0, title, key, groups, configs, summaries):
    """One bar chart: a group of bars (one per configuration) for each connection count."""
    out = [f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="#fff" stroke="#ccc"/>',
           svg_text(x0 + PANEL_W / 2, y0 + 20, title, 13, weight="bold")]
    values = [summaries.get((cfg, c), {}).get(key) for c in groups for cfg in configs]
    top = max([v for v in values if v is not None] or [0])
    step = nice_step(top * 1.08)  # headroom for the value labels above the tallest bar
    axis_top = step * max(1, math.ceil(top * 1.08 / step))
    px, py = x0 + MARGIN_L, y0 + MARGIN_T
    pw, ph = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    ticks = int(round(axis_top / step))
    for i in range(ticks + 1):
        value = i * step
        y = py + ph - ph * value / axis_top
        out.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + pw}" y2="{y:.1f}" stroke="{"#888" if i == 0 else "#e4e4e4"}"/>')
        out.append(svg_text(px - 6, y + 4, tick_label(value, step), 11, anchor="end", fill="#555"))
    group_w = pw / max(1, len(groups))
    bar_w = min(42.0, group_w * 0.8 / max(1, len(configs)))
    for gi, c in enumerate(groups):
        gx = px + gi * group_w + (group_w - bar_w * len(configs)) / 2
        for ci, cfg in enumerate(configs):
            v = summaries.get((cfg, c), {}).get(key)
            x = gx + ci * bar_w
            if v is None:
                out.append(svg_text(x + bar_w / 2, py + ph - 4, "n/a", 10, fill="#888"))
                continue
            h = ph * v / axis_top
            out.append(f'<rect x="{x + 1:.1f}" y="{py + ph - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                       f'fill="{COLORS.get(cfg, "#777")}"><title>{escape(CONFIGS.get(cfg, (cfg,))[0])}, {c} conns: '
                       f'{v:,.2f}</title></rect>')
            out.append(svg_text(x + bar_w / 2, py + ph - h - 3, short_number(v), 10 if bar_w >= 30 else 8))
        out.append(svg_text(px + gi * group_w + group_w / 2, py + ph + 16, f"{c} conns", 11, fill="#333"))
    return out


def render_chart(summaries_by_profile, configs, title):
    """summaries_by_profile: {profile: {(config, connections): summary}} -> SVG text, one row of panels per profile."""
    profiles = [p for p in summaries_by_profile if summaries_by_profile[p]]
    width = 2 * PANEL_W + PANEL_GAP + 40
    legend_h, row_h = 56, PANEL_H + 44
    height = legend_h + row_h * len(profiles) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           f'<rect width="{width}" height="{height}" fill="#fafafa"/>',
           svg_text(20, 24, title, 15, anchor="start", weight="bold")]
    lx = 20
    for cfg in configs:
        out.append(f'<rect x="{lx}" y="36" width="14" height="14" fill="{COLORS.get(cfg, "#777")}"/>')
        label = CONFIGS.get(cfg, (cfg,))[0]
        out.append(svg_text(lx + 20, 48, label, 12, anchor="start"))
        lx += 40 + 7.5 * len(label)
    for i, profile in enumerate(profiles):
        y = legend_h + i * row_h
        desc = PROFILES[profile][5] if profile in PROFILES else ""
        out.append(svg_text(20, y + 24, f"{profile}: {desc}" if desc else profile, 13, anchor="start", weight="bold"))
        summaries = summaries_by_profile[profile]
        groups = sorted({c for (_, c) in summaries})
        used = [cfg for cfg in configs if any(cfg == k[0] for k in summaries)]
        for j, (key, panel_title) in enumerate(CHART_PANELS):
            out += chart_panel(20 + j * (PANEL_W + PANEL_GAP), y + 34, panel_title, key, groups, used, summaries)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def summaries_from_runs(runs):
    """{profile: {(config, connections): summary}} with profiles and configurations in the usual order."""
    grouped = {}
    for r in runs:
        grouped.setdefault(r["profile"], {}).setdefault((r["config"], r["connections"]), []).append(r)
    order = {p: i for i, p in enumerate(PROFILES)}
    return {p: {k: summarize(v) for k, v in grouped[p].items()}
            for p in sorted(grouped, key=lambda p: (order.get(p, len(order)), p))}


def configs_in(runs):
    present = {r["config"] for r in runs}
    return [c for c in CONFIGS if c in present] + sorted(present - set(CONFIGS))


def write_chart(svg_path, runs, env):
    title = f"Load benchmark {env.get('date', '')} ({env.get('commit', '?')}): medians per configuration"
    svg_path.write_text(render_chart(summaries_from_runs(runs), configs_in(runs), title))
    return svg_path


def chart_from(json_path):
    """--chart-from: redraws FILE.svg from FILE.json and makes sure FILE.md (if any) shows it."""
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read {json_path}: {e}") from e
    runs = data.get("runs") or []
    if not runs:
        raise BenchError(f"{json_path} has no runs")
    missing = [k for k in ("config", "profile", "connections", "rps", "cpu_us_per_req", "errors") if k not in runs[0]]
    if missing:
        raise BenchError(f"{json_path}: runs lack {', '.join(missing)}; is it a build/bench.py results file?")
    svg = write_chart(Path(json_path).with_suffix(".svg"), runs, data.get("environment", {}))
    md = svg.with_suffix(".md")
    if md.is_file():
        text = md.read_text()
        if f"({svg.name})" not in text:
            md.write_text(add_chart_reference(text, svg.name))
    return svg


def add_chart_reference(md_text, svg_name):
    ref = f"![req/s and CPU us/req per configuration]({svg_name})"
    if "## Results\n\n" in md_text:
        return md_text.replace("## Results\n\n", f"## Results\n\n{ref}\n\n", 1)
    return md_text.rstrip("\n") + f"\n\n{ref}\n"


# ---------------------------------------------------------------- main

def parse_args():
    p = argparse.ArgumentParser(prog="build/bench.sh", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="plaintext,pipelined,json,close,sweep",
                   help="comma-separated subset of: " + ", ".join(PROFILES))
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    p.add_argument("--runs", type=int, help="measured runs per profile (default 3; --quick: 1)")
    p.add_argument("--duration", type=int, help="seconds per measured run (default 10; --quick: 3)")
    p.add_argument("--warmup", type=int, help="warm-up seconds before each measurement (default 5; --quick: 2)")
    p.add_argument("--warmup-max", type=int,
                   help="longest warm-up: after --warmup s it goes on in 3 s windows until the server's tiered JIT "
                        "has been quiet for two windows, at most this long (default 90; --quick: the --warmup)")
    p.add_argument("--quick", action="store_true", help="smoke check: 1 short run")
    p.add_argument("--server-dll", type=Path, help="run this prebuilt server instead of building samples/PlatformBenchmarks")
    p.add_argument("--load-generator", choices=["wrk", "bombardier"], default="wrk")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--no-perf", action="store_true", help="do not count syscalls (perf adds a little overhead per syscall)")
    p.add_argument("--static-servers", default=",".join(STATIC_SERVERS),
                   help="static profile: comma-separated subset of: " + ", ".join(STATIC_SERVERS))
    p.add_argument("--static-files", default=",".join(n for n, _ in STATIC_FILES),
                   help="static profile: comma-separated subset of: " + ", ".join(n for n, _ in STATIC_FILES))
    p.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--chart-from", type=Path, metavar="FILE.json",
                   help="only redraw FILE.svg from an earlier run's FILE.json (and reference it from FILE.md); runs nothing")
    a = p.parse_args()
    a.runs = a.runs or (1 if a.quick else 3)
    a.duration = a.duration or (3 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (2 if a.quick else 5)
    a.warmup_max = a.warmup_max if a.warmup_max is not None else (a.warmup if a.quick else 90)
    a.warmup_max = max(a.warmup_max, a.warmup)
    a.profiles = [x.strip() for x in a.profiles.split(",") if x.strip()]
    a.configs = [x.strip() for x in a.configs.split(",") if x.strip()]
    a.static_servers = [x.strip() for x in a.static_servers.split(",") if x.strip()]
    a.static_files = [x.strip() for x in a.static_files.split(",") if x.strip()]
    unknown_files = [f for f in a.static_files if f not in dict(STATIC_FILES)]
    if unknown_files or not a.static_files:
        p.error(f"unknown static file(s) {unknown_files}; choose from {', '.join(n for n, _ in STATIC_FILES)}")
    if "static" in a.profiles and len(a.profiles) > 1:
        p.error("the static profile runs alone (--profiles static): it starts its own servers")
    for name, known, values in (("profile", PROFILES, a.profiles), ("config", CONFIGS, a.configs)):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            p.error(f"unknown {name}(s) {unknown}; choose from {', '.join(known)}")
    if a.runs < 1 or a.duration < 1 or a.warmup < 0:
        p.error("--runs and --duration must be at least 1, --warmup at least 0")
    return a


# ---------------------------------------------------------------- the static profile

class StaticServer:
    """samples/StaticFiles (io_uring or Sockets) or Debian's nginx (sendfile on, one process), pinned to CPU 0."""

    def __init__(self, kind, dll, root, port, log_dir):
        self.config, self.kind, self.port, self.root = kind, kind, port, root
        self.log_path = Path(log_dir) / f"server-static-{kind}.log"
        if kind == "nginx":
            conf = Path(log_dir) / "nginx.conf"
            # master_process off: the one process that serves is the one measured (CPU, syscalls).
            conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {log_dir}/nginx.pid;
error_log {self.log_path} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ application/octet-stream bin; }}
    client_body_temp_path {log_dir}/nginx-body;
    proxy_temp_path {log_dir}/nginx-proxy;
    fastcgi_temp_path {log_dir}/nginx-fastcgi;
    uwsgi_temp_path {log_dir}/nginx-uwsgi;
    scgi_temp_path {log_dir}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
""")
            self.cmd = ["taskset", "-c", SERVER_CPU, shutil.which("nginx") or "nginx", "-c", str(conf), "-p", log_dir]
        else:
            self.cmd = ["taskset", "-c", SERVER_CPU, "dotnet", str(dll), "--transport", kind.split("-")[0],
                        *(["--inline"] if kind.endswith("-inline") else []), "--root", root,
                        "--urls", f"http://127.0.0.1:{port}"]
        self.proc = None

    def start(self):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise BenchError(f"port {self.port} is already in use by another process")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        track_pid(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} exited with code {self.proc.returncode} during startup: "
                                 f"{shlex.join(self.cmd)}\n{Server.log_tail(self)}")
            try:
                fetch(self.port, "/" + STATIC_FILES[0][0], {})
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.kind} did not answer on port {self.port} within {START_TIMEOUT_S} s\n"
                                     + Server.log_tail(self))
                time.sleep(0.2)
        if self.kind != "nginx":
            rings = sum(1 for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir() if _readlink(fd) == "anon_inode:[io_uring]")
            if self.kind.startswith("iouring") != (rings > 0):
                raise BenchError(f"{self.kind}: the server has {rings} io_uring instance(s); wrong transport\n"
                                 + Server.log_tail(self))

    def stop(self):
        Server.stop(self)


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def make_static_files(root):
    """Pseudo-random files (a wrong offset shows), aged past the sender's 2 s cache rule; returns their SHA-256."""
    import hashlib
    digests = {}
    for name, size in STATIC_FILES:
        h = hashlib.sha256()
        with open(Path(root) / name, "wb") as f:
            block = os.urandom(1024 * 1024)
            left = size
            while left > 0:
                chunk = block[:min(left, len(block))]
                f.write(chunk)
                h.update(chunk)
                left -= len(chunk)
        digests[name] = h.hexdigest()
    time.sleep(2.5)
    return digests


def validate_static(server, digests):
    import hashlib
    for name, _ in STATIC_FILES:
        for attempt in range(2):  # the second one may come from a cache
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                conn.request("GET", "/" + name)
                r = conn.getresponse()
                body = r.read()
                conn.close()
            except OSError as e:
                raise BenchError(f"{server.kind}: GET /{name} failed: {e}") from e
            if r.status != 200 or hashlib.sha256(body).hexdigest() != digests[name]:
                raise BenchError(f"{server.kind}: GET /{name} returned {r.status} with {len(body)} bytes "
                                 "that are not the file; refusing to benchmark it")


def build_static_sample():
    log("building samples/StaticFiles (Release) ...")
    run_text(["dotnet", "build", "-c", "Release", "-nologo", "-v", "quiet", str(STATIC_SAMPLE)], timeout=1200)
    dll = Path(run_text(["dotnet", "msbuild", str(STATIC_SAMPLE), "-nologo", "-getProperty:TargetPath",
                         "-p:Configuration=Release"], timeout=300))
    if not dll.is_file():
        raise BenchError(f"build succeeded but {dll} does not exist")
    return dll


def static_profile(name, connections):
    """Registers the load profile 'static:NAME' (GET /NAME, keep-alive) and returns its key."""
    profile = f"static:{name}"
    PROFILES[profile] = ("/" + name, [connections], "*/*", "keep-alive", 1, f"GET /{name}, {connections} connections")
    return profile


def static_run_text(r):
    """Adds MB/s to a static run and returns its progress text."""
    # From the bytes wrk read, not completed requests: a 100 MiB response may not finish in a short run.
    r["mb_s"] = (r["bytes_read"] or 0) / r["seconds"] / 1e6 if r["seconds"] else None
    return f"{r['rps']:,.0f} req/s, {r['mb_s']:,.0f} MB/s, {fmt(r['cpu_us_per_req'], 1)} us/req, {r['errors']} errors"


def run_static(args, gen, count_syscalls, notes):
    if not ensure_tool("nginx", "nginx"):
        raise BenchError("nginx is missing and could not be installed (apt-get install nginx)")
    dll = args.server_dll.resolve() if args.server_dll else build_static_sample()
    env = environment(args, dll)
    env["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    work = tempfile.mkdtemp(prefix="bench-static-")
    root = os.path.join(work, "www")
    os.mkdir(root)
    log(f"generating {len(STATIC_FILES)} files in {root} ...")
    digests = make_static_files(root)
    connections = PROFILES["static"][1][0]
    runs, summaries = [], {}
    servers = [s for s in STATIC_SERVERS if s in args.static_servers]
    # All servers are up together and each measured run goes round them in turn (interleaved_runs).
    running = {}
    try:
        for kind in servers:
            server = StaticServer(kind, dll, root, args.port + len(running) if args.port else free_port(), work)
            running[kind] = server
            log(f"starting {kind}: {shlex.join(server.cmd)}")
            server.start()
            validate_static(server, digests)
        for name, size in [f for f in STATIC_FILES if f[0] in args.static_files]:
            profile = static_profile(name, connections)
            these = interleaved_runs(running, gen, profile, connections, args, count_syscalls,
                                     {k: f"{k} / {name} ({connections} conns)" for k in servers}, notes, static_run_text)
            for kind in servers:
                runs += these[kind]
                s = summarize(these[kind])
                s["mb_s"] = median(these[kind], "mb_s")
                summaries[(kind, name)] = s
    finally:
        for server in running.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [f"### static: {PROFILES['static'][5]}", "",
             "| Server | File | req/s | MB/s | server CPU us/req | syscalls/req | p50 ms | p99 ms | errors | server CPU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, _ in STATIC_FILES:
        for kind in servers:
            s = summaries.get((kind, name))
            if s:
                lines.append(f"| {kind} | {name} | {fmt(s['rps'], 0)} | {fmt(s['mb_s'], 0)} | {fmt(s['cpu_us_per_req'], 2)} "
                             f"| {fmt(s['syscalls_per_req'], 2)} | {fmt(s['p50_ms'], 2)} | {fmt(s['p99_ms'], 2)} "
                             f"| {s['errors']} | {fmt(s['server_cpu_pct'], 0)}% |")
    # Ratios the targets are stated in: io_uring against Sockets (same scheduling) and against nginx.
    lines += ["", "| Ratio | File | req/s | MB/s | server CPU us/req |", "| --- | --- | ---: | ---: | ---: |"]
    for a, b in [("iouring", "sockets"), ("iouring-inline", "sockets-inline"), ("iouring", "nginx"), ("iouring-inline", "nginx")]:
        for name, _ in STATIC_FILES:
            sa, sb = summaries.get((a, name)), summaries.get((b, name))
            if sa and sb:
                lines.append(f"| {a} / {b} | {name} | {ratio(sa['rps'], sb['rps'])} | {ratio(sa['mb_s'], sb['mb_s'])} "
                             f"| {ratio(sa['cpu_us_per_req'], sb['cpu_us_per_req'])} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    for n in notes:
        print(f"Note: {n}")
    if args.quick:
        print("\n--quick: results not written (smoke check only)")
        return
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    base = Path(args.results_dir) / f"{stamp}-static-{env['commit']}"
    base.parent.mkdir(parents=True, exist_ok=True)
    body = ["# Static files: io_uring ring file sender vs Sockets vs nginx", "",
            "| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in env.items()] + [""] \
        + [f"Each file's measurement follows {warmup_text(args.warmup, args.warmup_max)}; medians of {args.runs} runs, "
           "interleaved (all servers up, each run goes round them in turn).", ""] \
        + [f"- Note: {n}" for n in notes] + ([""] if notes else []) + [table]
    base.with_suffix(".md").write_text("\n".join(body))
    base.with_suffix(".json").write_text(json.dumps({"environment": env, "runs": runs}, indent=2, default=str))
    print(f"\nresults: {base}.md (+ .json)")


def interrupt(signum, frame):
    """SIGTERM/SIGHUP unwind like Ctrl+C, so the finally blocks stop the server."""
    raise KeyboardInterrupt()


def main():
    args = parse_args()
    if args.chart_from:
        print(f"chart: {chart_from(args.chart_from)}")
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    if (os.cpu_count() or 1) < 2 or len(os.sched_getaffinity(0)) < 2:
        raise BenchError("needs two CPUs (server on CPU 0, load generator on CPU 1)")
    gen = args.load_generator
    if gen == "wrk" and not ensure_tool("wrk", "wrk"):
        raise BenchError("wrk is missing (apt-get install wrk)")
    if gen == "bombardier":
        if not shutil.which("bombardier"):  # Debian's `bombardier` package is an unrelated game
            raise BenchError("bombardier is not on PATH (install codesenberg/bombardier yourself; not from apt)")
        if "pipelined" in args.profiles:
            raise BenchError("bombardier cannot pipeline; drop the pipelined profile or use wrk")
    notes = []
    perf_reason = None if args.no_perf else perf_problem()
    if args.no_perf:
        notes.append("syscalls not counted (--no-perf)")
    elif perf_reason:
        notes.append(f"syscalls/request n/a: {perf_reason}")
        log(f"warning: {perf_reason}; syscalls/request will be n/a")
    count_syscalls = not args.no_perf and perf_reason is None
    if "sweep" in args.profiles:
        raise_fd_limit(2 * max(PROFILES["sweep"][1]) + 1024)
    if args.profiles == ["static"]:
        run_static(args, gen, count_syscalls, notes)
        return

    dll = args.server_dll.resolve() if args.server_dll else build_sample()
    if not dll.is_file():
        raise BenchError(f"server dll {dll} not found")
    if args.server_dll:
        notes.append(f"prebuilt server {dll}, not a fresh build of samples/PlatformBenchmarks")
    env = environment(args, dll)

    # Every configuration's server is up for the whole run; interleaved_runs says why.
    steps = [(p, c) for p in args.profiles for c in PROFILES[p][1]]
    total = len(steps)
    runs, summaries = [], {p: {} for p in args.profiles}
    log_dir = tempfile.mkdtemp(prefix="bench-")
    servers = {}
    try:
        for config in args.configs:
            server = Server(dll, config, args.port + len(servers) if args.port else free_port(), log_dir)
            servers[config] = server
            log(f"starting {CONFIGS[config][0]}: {shlex.join(server.cmd)}")
            server.start()
            validate(server, args.profiles)
        for step, (profile, connections) in enumerate(steps, 1):
            prefixes = {c: f"[{step}/{total}] {CONFIGS[c][0]} / {profile} ({connections} conns)" for c in args.configs}
            these = interleaved_runs(servers, gen, profile, connections, args, count_syscalls, prefixes, notes,
                                     lambda r: f"{r['rps']:,.0f} req/s, {fmt(r['cpu_us_per_req'], 2)} us/req, "
                                               f"{fmt(r['syscalls_per_req'], 2)} syscalls/req, {r['errors']} errors")
            for config in args.configs:
                runs += these[config]
                summaries[profile][(config, connections)] = summarize(these[config])
    finally:
        for server in servers.values():
            server.stop()

    tables = [profile_tables(p, summaries[p], args.configs) for p in args.profiles]
    print("\n" + "\n".join(tables))
    for n in notes:
        print(f"Note: {n}")
    path = write_results(args.results_dir, env, tables, runs, notes)
    print(f"\nresults: {path} (+ .json, .svg chart); server logs: {log_dir}")


def run_script(main_function, name):
    """Runs a benchmark script's main: a BenchError is one line and exit 1, Ctrl+C exit 130."""
    try:
        main_function()
    except BenchError as e:
        log(f"{name}: error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log(f"{name}: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    run_script(main, "bench")
