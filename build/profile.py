#!/usr/bin/env python3
"""Where a request's server CPU goes: perf record of the server, per-request microseconds by layer.

For each configuration in turn: start the server pinned to CPU 0 with the runtime's perf map on, warm
it up exactly as build/bench.py does (until the tiered JIT is quiet), then drive the profile from CPU 1
for --duration s while `perf record -e cpu-clock` samples the server process (self time, no call
graphs). Each sample is put in one bucket by its DSO and symbol (kernel TCP/IP, kernel io_uring,
scheduler, ..., Kestrel, Pipelines, this transport, the Sockets transport, runtime, JIT). A bucket's
share of the samples times the server CPU per request measured over the same interval gives its
microseconds per request, so the buckets of a configuration add up to its CPU per request. Writes
benchmarks/results/YYYY-MM-DD-HHMM-profile-<profile>-<commit>.md.

  python3 build/profile.py [--profile plaintext] [--configs iouring,iouring-inline,sockets,sockets-inline]
                           [--duration 10] [--warmup 3] [--warmup-max 90]
  python3 build/profile.py --profile static:4k.bin [--configs iouring,iouring-inline,sockets,nginx]

The load profiles are build/bench.py's (samples/PlatformBenchmarks); static:FILE serves one of the
static profile's files with samples/StaticFiles (or nginx) as build/bench.sh --profiles static does.
perf record adds a little overhead of its own; CPU per request here is therefore a few percent above
build/bench.sh's, and the comparison between configurations is what this is for.
"""
import argparse
import collections
import datetime
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

SAMPLE_HZ = 1999

# (bucket, rule) in order; the first rule that matches a sample's (dso, symbol) takes it.
KERNEL_BUCKETS = [
    # In this VM the sampling timer cannot interrupt code that runs with interrupts off; such samples land
    # where interrupts come back on. They belong to whatever ran with them off (wake-ups, softirq network
    # processing, io_uring task work), which a self-time profile cannot tell apart.
    ("kernel: interrupts re-enabled (deferred samples)", re.compile(
        r"^(_raw_spin_unlock_irqrestore|_raw_spin_unlock_irq|irqentry_exit|__local_bh_enable_ip|"
        r"local_bh_enable|_raw_spin_unlock_bh|__raw_spin_unlock_irq|handle_softirqs)")),
    # sched_yield: on one CPU every SpinWait / Thread.Sleep(0) of the runtime (thread-pool workers
    # spinning before they block, contended locks) is a yield system call.
    ("kernel: sched_yield (runtime spin-waits)", re.compile(r"^(do_sched_yield|__x64_sys_sched_yield|yield_task)")),
    ("kernel: scheduler, futex, wake-ups", re.compile(
        r"^(__?schedule|schedule|finish_task_switch|__switch_to|switch_mm|try_to_wake_up|ttwu|wake_up|__wake_up|"
        r"enqueue_|dequeue_|pick_next|put_prev|set_next|update_curr|update_load|update_cfs|update_rq|select_task|"
        r"check_preempt|resched|psi_|futex|__futex|do_futex|eventfd|__x64_sys_futex|native_sched|sched_|"
        r"reweight|place_entity|__update_load|raw_spin_rq|prepare_task_switch|newidle|load_balance|"
        r"native_queued_spin|_raw_spin)")),
    ("kernel: io_uring", re.compile(r"^(__?io_|io_uring|__x64_sys_io_uring|tctx_)")),
    ("kernel: epoll", re.compile(r"^(ep_|__ep_|do_epoll|__x64_sys_epoll|epoll)")),
    ("kernel: TCP/IP over loopback", re.compile(
        r"^(__?tcp|tcp|__?ip|ip_|inet|__inet|__?sk_|sk_|sock|__sock|__sys_(send|recv)|skb|__skb|kfree_skb|"
        r"__kfree_skb|__alloc_skb|alloc_skb|consume_skb|napi|__napi|net_|__net|netif|__netif|dev_|__dev|"
        r"loopback|validate_xmit|lock_sock|release_sock|__release_sock|raw_v4|nf_|ipv4|__x64_sys_(send|recv)|"
        r"security_sock|security_socket|bpf_|__cgroup_bpf|skb_|__copy_skb|do_softirq|__do_softirq|"
        r"__local_bh|irq_exit|process_backlog|__sk|sk_stream|mem_cgroup_charge_skmem|__mod_memcg|"
        r"__sys_shutdown|__x64_sys_shutdown|__sys_accept|do_accept|__x64_sys_accept)")),
    ("kernel: file lookup, stat and read", re.compile(
        r"^(__?do_sys_newfstatat|vfs_|path_|link_path|filename_|do_statx|__do_sys_statx|__x64_sys_(statx|newlstat|"
        r"newstat|newfstatat|read|pread|openat|close)|lookup|__lookup|dput|getname|putname|walk_component|"
        r"step_into|inode_|generic_fillattr|cp_new_stat|cp_statx|do_filp_open|do_sys_open|filemap_|"
        r"copy_page_to_iter|complete_walk|terminate_walk|legitimize|try_to_unlazy|d_lookup|__d_lookup|"
        r"ext4_|xfs_|btrfs_|shmem_|ovl_|kernfs_|strncpy_from_user)")),
    ("kernel: syscall entry and exit", re.compile(
        r"^(entry_SYSCALL|syscall_|do_syscall|exit_to_user|__x64_sys|x64_sys_call|syscall_exit|"
        r"__audit|audit_|fpregs|restore_fpregs|switch_fpu|arch_exit|srso_|retbleed|__x86_return|"
        r"__fdget|fdget|fput|__fput|__rcu_read|rcu_)")),
    ("kernel: memory copy and allocation", re.compile(
        r"^(copy_user|_copy_to|_copy_from|__copy|rep_movs|memcpy|memset|__memcpy|__memset|clear_page|"
        r"kmem_cache|__kmem_cache|kmalloc|__kmalloc|kfree|slab_|__slab|___slab|page_|__page|alloc_pages|"
        r"__alloc_pages|get_page|free_|__free|mod_memcg|__mod_lruvec|obj_cgroup|refill_obj|memcg_)")),
]

MANAGED_BUCKETS = [
    ("this transport (Kestrel.Transport.IoUring)", re.compile(r"Kestrel\.Transport\.IoUring")),
    ("Sockets transport and System.Net.Sockets", re.compile(r"(Transport\.Sockets|System\.Net\.Sockets)")),
    ("Kestrel HTTP (Server.Kestrel.Core)", re.compile(r"Microsoft\.AspNetCore\.Server\.Kestrel")),
    ("System.IO.Pipelines", re.compile(r"System\.IO\.Pipelines")),
    ("ASP.NET Core app, middleware and static files", re.compile(
        r"(PlatformBenchmarks|Microsoft\.AspNetCore\.(Http|Routing|Hosting|StaticFiles|Builder)|"
        r"Microsoft\.Extensions\.FileProviders|Microsoft\.Net\.Http\.Headers|Program|StaticFiles)")),
    ("CoreLib: threads, thread pool, tasks, async", re.compile(
        r"System\.(Threading|Runtime\.CompilerServices\.(Async|ConfiguredValueTask|ValueTaskAwaiter|TaskAwaiter|"
        r"PoolingAsync)|Runtime\.CompilerServices\.YieldAwaitable)")),
]


def bucket(dso, symbol):
    """The bucket one perf sample belongs to."""
    if dso.startswith("[kernel") or dso.startswith("[vdso") or dso == "[unknown]" and symbol.startswith("0xffff"):
        for name, rule in KERNEL_BUCKETS:
            if rule.search(symbol):
                return name
        return "kernel: other"
    if "libcoreclr" in dso:
        return "runtime native (GC, stubs, type system)"
    if "libclrjit" in dso:
        return "JIT"
    if "libSystem.Native" in dso:
        return "System.Native (P/Invoke shims)"
    if dso.startswith("libc.so") or dso.startswith("libc-") or dso.startswith("libpthread") or dso.startswith("ld-linux"):
        return "libc"
    if dso == "nginx" or dso.endswith("/nginx"):
        return "nginx"
    for name, rule in MANAGED_BUCKETS:
        if rule.search(symbol):
            return name
    if "System.Private.CoreLib" in dso or symbol.startswith("[") or "System." in symbol:
        return "CoreLib: other (collections, strings, spans, memory)"
    return "other user space"


def short_symbol(symbol):
    """`Type::Method` of a jitted method's full signature (the part a reader needs), else the symbol."""
    m = re.search(r"([\w`<>+.\[\],]+)::([\w`<>.|$]+)\(", symbol)
    if not m:
        return symbol if len(symbol) <= 100 else symbol[:97] + "..."
    type_name = re.sub(r"\[[^\]]*\]", "", m.group(1))  # generic instantiations
    return type_name.rsplit(".", 1)[-1] + "::" + m.group(2)


def parse_report(text):
    """(percent, dso, symbol) rows of `perf report --stdio -F overhead,dso,sym -t |`."""
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("|", 2)
        if len(parts) < 3 or not parts[0].strip().endswith("%"):
            continue
        symbol = re.sub(r"^\[[.kgu]\]\s*", "", parts[2].strip())
        rows.append((float(parts[0].strip().rstrip("%")), parts[1].strip(), symbol))
    return rows


def profile_once(server, gen, profile, connections, duration, perf_file):
    """Drives the profile while perf records the server; returns the run's numbers and the sample rows."""
    pid = server.proc.pid
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-p", str(pid),
                             "-o", str(perf_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # let perf attach before the load starts
    try:
        cpu0 = bench.cpu_us(pid)
        result = bench.drive(gen, profile, server.port, connections, duration)
        cpu1 = bench.cpu_us(pid)
    finally:
        perf.send_signal(signal.SIGINT)
        try:
            err = perf.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            perf.kill()
            perf.wait()
            raise bench.BenchError("perf record did not stop within 60 s")
    if perf.returncode not in (0, -signal.SIGINT, 130) or not perf_file.exists():
        raise bench.BenchError(f"perf record failed ({perf.returncode}): {err.strip()}")
    report = subprocess.run(["perf", "report", "-i", str(perf_file), "--stdio", "--no-children", "-F",
                             "overhead,dso,sym", "-t", "|", "--percent-limit", "0"],
                            capture_output=True, text=True, timeout=600)
    rows = parse_report(report.stdout)
    if not rows:
        raise bench.BenchError(f"perf report gave no samples: {report.stderr.strip()[-500:]}")
    n = result["requests"]
    return {"requests": n, "rps": n / result["seconds"], "cpu_us_per_req": (cpu1 - cpu0) / n,
            "errors": result["socket_errors"] + result["non2xx"]}, rows


def start_server(config, profile, dll, static_root, log_dir):
    port = bench.free_port()
    if profile.startswith("static:"):
        server = bench.StaticServer(config, dll, static_root, port, log_dir)
    else:
        server = bench.Server(dll, config, port, log_dir)
    bench.log(f"starting {config}: {shlex.join(server.cmd)}")
    server.start()
    return server


def main():
    p = argparse.ArgumentParser(prog="build/profile.py", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="plaintext",
                   help="one of: " + ", ".join(k for k in bench.PROFILES if k not in ("sweep", "static"))
                        + ", or static:FILE with FILE one of " + ", ".join(n for n, _ in bench.STATIC_FILES))
    p.add_argument("--configs", help="comma-separated; load profiles: " + ", ".join(bench.DEFAULT_CONFIGS)
                   + "; static: " + ", ".join(bench.STATIC_SERVERS))
    p.add_argument("--connections", type=int, help="default: the profile's (256; close 64; static 64)")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--warmup-max", type=int, default=90)
    p.add_argument("--top", type=int, default=12, help="hottest symbols listed per configuration")
    p.add_argument("--results-dir", type=Path, default=bench.ROOT / "benchmarks" / "results")
    args = p.parse_args()
    is_static = args.profile.startswith("static:")
    files = dict(bench.STATIC_FILES)
    if is_static and args.profile[len("static:"):] not in files:
        p.error(f"unknown static file; choose from {', '.join(files)}")
    if not is_static and (args.profile not in bench.PROFILES or args.profile in ("sweep", "static")):
        p.error(f"unknown profile {args.profile}")
    known = bench.STATIC_SERVERS if is_static else list(bench.CONFIGS)
    configs = (args.configs or ",".join(["iouring", "iouring-inline", "sockets", "nginx"] if is_static
                                        else bench.DEFAULT_CONFIGS)).split(",")
    if any(c not in known for c in configs):
        p.error(f"unknown config in {configs}; choose from {', '.join(known)}")
    if not bench.ensure_tool("perf", "linux-perf") or not bench.ensure_tool("wrk", "wrk"):
        raise bench.BenchError("needs perf and wrk")
    if is_static and "nginx" in configs and not bench.ensure_tool("nginx", "nginx"):
        raise bench.BenchError("nginx is missing")

    # The runtime writes /tmp/perf-PID.map so perf can name jitted methods; W^X off keeps code at one address.
    os.environ["DOTNET_PerfMapEnabled"] = "1"
    os.environ["DOTNET_EnableWriteXorExecute"] = "0"
    dll = bench.build_static_sample() if is_static else bench.build_sample()
    env = bench.environment(argparse.Namespace(load_generator="wrk", runs=1, duration=args.duration,
                                               warmup=args.warmup, warmup_max=args.warmup_max), dll)
    env["command"] = "python3 build/profile.py " + shlex.join(sys.argv[1:])
    work = tempfile.mkdtemp(prefix="profile-")
    static_root = None
    if is_static:
        static_root = os.path.join(work, "www")
        os.mkdir(static_root)
        bench.make_static_files(static_root)
        bench.static_profile(args.profile[len("static:"):], bench.PROFILES["static"][1][0])
    connections = args.connections or bench.PROFILES[args.profile][1][0]
    notes, results = [], {}
    try:
        for config in configs:
            server = start_server(config, args.profile, dll, static_root, work)
            try:
                prefix = f"{config} / {args.profile} ({connections} conns)"
                bench.warm_up(server, "wrk", args.profile, connections, args, prefix, notes)
                bench.log(f"{prefix} perf record {args.duration} s ...", end=" ")
                run, rows = profile_once(server, "wrk", args.profile, connections, args.duration,
                                         Path(work) / f"perf-{config}.data")
                bench.log(f"{run['rps']:,.0f} req/s, {run['cpu_us_per_req']:.2f} us/req, {len(rows)} symbols")
                results[config] = (run, rows)
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = render(args, env, configs, results, notes, connections)
    print("\n" + text)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out = args.results_dir / f"{stamp}-profile-{args.profile.replace(':', '-').replace('.bin', '')}-{env['commit']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"results: {out}")


def render(args, env, configs, results, notes, connections):
    per_config = {}
    order = [b for b, _ in KERNEL_BUCKETS] + ["kernel: other"] + [b for b, _ in MANAGED_BUCKETS] + [
        "CoreLib: other (collections, strings, spans, memory)", "runtime native (GC, stubs, type system)", "JIT",
        "System.Native (P/Invoke shims)", "libc", "nginx", "other user space"]
    for config, (run, rows) in results.items():
        total = sum(pct for pct, _, _ in rows) or 1.0
        buckets = collections.Counter()
        for pct, dso, sym in rows:
            buckets[bucket(dso, sym)] += pct / total * run["cpu_us_per_req"]
        per_config[config] = buckets
    lines = [f"# Server CPU per request by layer: {args.profile}, {connections} connections", "",
             "| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in env.items() if k not in ("runs", "duration_s")]
    lines += [f"| perf | `perf record -e cpu-clock -F {SAMPLE_HZ} -p SERVER` for the {args.duration} s run, self time |", ""]
    lines += [f"Each configuration: {bench.warmup_text(args.warmup, args.warmup_max)}, then one {args.duration} s run "
              "under perf. A bucket's microseconds per request are its share of the samples times the CPU per "
              "request of that run.", ""]
    lines += [f"- Note: {n}" for n in notes] + ([""] if notes else [])
    head = "| us per request | " + " | ".join(configs) + " |"
    lines += [head, "| --- |" + " ---: |" * len(configs)]
    lines.append("| **requests/s** | " + " | ".join(f"{results[c][0]['rps']:,.0f}" for c in configs) + " |")
    lines.append("| **server CPU us/request** | " + " | ".join(f"**{results[c][0]['cpu_us_per_req']:.2f}**" for c in configs) + " |")
    kernel = {c: sum(v for k, v in per_config[c].items() if k.startswith("kernel")) for c in configs}
    lines.append("| kernel, all | " + " | ".join(f"{kernel[c]:.2f}" for c in configs) + " |")
    lines.append("| user space, all | " + " | ".join(f"{results[c][0]['cpu_us_per_req'] - kernel[c]:.2f}" for c in configs) + " |")
    for b in order:
        if any(per_config[c].get(b, 0) >= 0.005 for c in configs):
            lines.append(f"| {b} | " + " | ".join(f"{per_config[c].get(b, 0):.2f}" for c in configs) + " |")
    lines.append("| errors | " + " | ".join(str(results[c][0]["errors"]) for c in configs) + " |")
    for c in configs:
        run, rows = results[c]
        total = sum(pct for pct, _, _ in rows) or 1.0
        hottest = sorted(rows, key=lambda r: -r[0])
        # The hottest symbols, then the hottest of the catch-all buckets (so "other" is not a black box).
        listed = hottest[:args.top] + [r for r in hottest[args.top:] if "other" in bucket(r[1], r[2])][:args.top // 2]
        lines += ["", f"### {c}: hottest symbols (self), then the hottest of the 'other' buckets", "",
                  "| % of samples | us/request | bucket | symbol |", "| ---: | ---: | --- | --- |"]
        for pct, dso, sym in listed:
            where = "jitted" if dso.startswith("[JIT]") or dso.startswith("perf-") else dso
            lines.append(f"| {pct / total * 100:.1f} | {pct / total * run['cpu_us_per_req']:.2f} | {bucket(dso, sym)} "
                         f"| `{short_symbol(sym).replace('|', '/')}` ({where}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    bench.run_script(main, "profile")
