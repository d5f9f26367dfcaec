#!/usr/bin/env python3
"""Managed bytes allocated per request, io_uring vs Sockets, default and inline scheduling.

For each configuration: start samples/PlatformBenchmarks with --alloc-stats pinned to CPU 0, warm up
with wrk (CPU 1), read GC.GetTotalAllocatedBytes(precise) from GET /_alloc, drive the profile for the
measured duration, read it again; bytes/request = delta / requests (the two /_alloc requests are noise
next to hundreds of thousands of requests). Medians of --runs runs. Writes
benchmarks/results/YYYY-MM-DD-HHMM-allocations-<commit>.md. Uses build/bench.py's server and wrk code.

  python3 build/allocations.py [--profiles plaintext,json,close] [--runs 3] [--duration 5] [--warmup 3]
"""
import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def allocated(port):
    status, _, body = bench.fetch(port, "/_alloc", {})
    if status != 200:
        raise bench.BenchError(f"GET /_alloc answered {status}: the server was not started with --alloc-stats")
    return int(body)


def main():
    p = argparse.ArgumentParser(prog="build/allocations.py", description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="plaintext,json,close")
    p.add_argument("--configs", default=",".join(bench.CONFIGS))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--warmup-max", type=int, default=90,
                   help="longest warm-up while the server's tiered JIT is still busy (as build/bench.py)")
    p.add_argument("--results-dir", type=Path, default=bench.ROOT / "benchmarks" / "results")
    args = p.parse_args()
    profiles, configs = args.profiles.split(","), args.configs.split(",")
    dll = bench.build_sample()
    log_dir = tempfile.mkdtemp(prefix="alloc-")
    rows, notes = {}, []
    for config in configs:
        server = bench.Server(dll, config, bench.free_port(), log_dir)
        server.cmd[server.cmd.index("--urls"):server.cmd.index("--urls")] = ["--alloc-stats"]
        server.start()
        try:
            for profile in profiles:
                connections = bench.PROFILES[profile][1][0]
                # Allocations fall as tiering settles (tier 0 and instrumented code box and allocate more).
                bench.warm_up(server, "wrk", profile, connections, args,
                              f"{bench.CONFIGS[config][0]} / {profile}", notes)
                values = []
                for i in range(args.runs):
                    before = allocated(server.port)
                    r = bench.drive("wrk", profile, server.port, connections, args.duration)
                    after = allocated(server.port)
                    values.append((after - before) / r["requests"])
                    bench.log(f"{bench.CONFIGS[config][0]:16} {profile:10} run {i + 1}: {values[-1]:8.1f} B/request "
                              f"({r['requests']:,} requests)")
                rows[(config, profile)] = statistics.median(values)
        finally:
            server.stop()

    lines = ["| profile | " + " | ".join(bench.CONFIGS[c][0] for c in configs) + " |",
             "|---|" + "---:|" * len(configs)]
    for profile in profiles:
        lines.append(f"| {profile} | " + " | ".join(f"{rows[(c, profile)]:,.0f}" for c in configs) + " |")
    table = "\n".join(lines)
    print("\nManaged bytes allocated per request (median of runs):\n" + table)
    commit = bench.commit_label()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = args.results_dir / f"{stamp}-allocations-{commit}.md"
    out.write_text(f"""# Managed allocations per request

- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}, commit {commit}
- Command: `python3 build/allocations.py {' '.join(sys.argv[1:])}`
- Server: samples/PlatformBenchmarks --alloc-stats, taskset -c {bench.SERVER_CPU}; wrk taskset -c {bench.CLIENT_CPU};
  {bench.warmup_text(args.warmup, args.warmup_max)}, then {args.runs} runs of {args.duration} s per profile; bytes = delta of
  GC.GetTotalAllocatedBytes(precise: true) over a run / requests in that run; median of the runs.
- Everything the process allocates counts: Kestrel, the transport, the application, the runtime.
{"".join(f"- Note: {n}" + chr(10) for n in notes)}
Managed bytes allocated per request:

{table}
""")
    print(f"results: {out}")


if __name__ == "__main__":
    bench.run_script(main, "allocations")
