#!/usr/bin/env python3
"""Memory per idle keep-alive connection, io_uring vs Sockets, side by side.

For each transport in turn, and each of --runs runs: start samples/PlatformBenchmarks pinned to CPU 0,
read its resident set (VmRSS), open --connections keep-alive connections that each make one
GET /plaintext (so Kestrel has set the connection up completely) and then stay idle, wait for the
server to settle, read VmRSS again, and report (RSS growth) / connections. Medians over the runs, and
the io_uring / Sockets ratio. Writes benchmarks/results/YYYY-MM-DD-HHMM-idle-memory-<commit>.md.

Usage: python3 build/idle-memory.py [--connections 10000] [--runs 3] [--configs iouring,sockets]
Python standard library only; uses build/bench.py's build, port and limit helpers. Documented in
benchmarks/README.md.
"""
import argparse
import datetime
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, World!"
LABELS = {"iouring": "io_uring", "sockets": "Sockets"}


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def one_request(sock):
    """Sends one GET /plaintext and reads its whole response."""
    sock.sendall(REQUEST)
    read_response(sock)


def read_response(sock):
    """Reads one response to GET /plaintext (its body is the 13 bytes of BODY)."""
    data = b""
    while BODY not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the server closed a connection during its first request")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {data[:80]!r}")


def start_server(dll, config, port):
    cmd = ["taskset", "-c", bench.SERVER_CPU, "dotnet", str(dll), "--transport", config, "--urls", f"http://127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                one_request(s)
            return proc, cmd
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stdout.read()}")
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not answer within 60 s")


def measure(dll, config, connections, settle_s):
    port = bench.free_port()
    proc, cmd = start_server(dll, config, port)
    sockets = []
    try:
        # Warm up (JIT, pools) on a few connections, then take the baseline.
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                for _ in range(200):
                    one_request(s)
        time.sleep(settle_s)
        before = rss_kib(proc.pid)
        batch = 500
        for start in range(0, connections, batch):
            opened = []
            for _ in range(min(batch, connections - start)):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                opened.append(s)
            for s in opened:
                s.sendall(REQUEST)
            for s in opened:
                read_response(s)
            sockets.extend(opened)
        time.sleep(settle_s)
        after = rss_kib(proc.pid)
        # Every connection is still open and served: one more request on a sample of them.
        for s in sockets[:: max(1, len(sockets) // 50)]:
            one_request(s)
        return (after - before) * 1024 / connections, before, after, cmd
    finally:
        for s in sockets:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--configs", default="iouring,sockets")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each RSS reading")
    p.add_argument("--results-dir", type=Path, default=bench.ROOT / "benchmarks" / "results")
    args = p.parse_args()

    bench.raise_fd_limit(args.connections + 1024)  # the server inherits it too
    dll = bench.build_sample()

    configs = args.configs.split(",")
    results = {c: [] for c in configs}
    raw = []
    cmds = {}
    for run in range(1, args.runs + 1):
        for config in configs:  # interleaved: a drift of the machine hits both alike
            bench.log(f"[run {run}/{args.runs}] {config}: {args.connections} idle connections ...")
            per_conn, before, after, cmd = measure(dll, config, args.connections, args.settle)
            cmds[config] = " ".join(cmd[:-1] + ["http://127.0.0.1:PORT"])
            results[config].append(per_conn)
            raw.append((config, run, before, after, per_conn))
            bench.log(f"  RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB: {per_conn / 1024:.2f} KiB per connection")

    medians = {c: statistics.median(v) for c, v in results.items()}
    now = datetime.datetime.now(datetime.timezone.utc)
    commit = bench.commit_label()
    lines = [
        f"# Memory per idle keep-alive connection {now.isoformat(timespec='seconds')}",
        "",
        f"- Commit: `{commit}`",
        f"- Kernel: {subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}",
        f"- .NET: SDK {subprocess.run(['dotnet', '--version'], capture_output=True, text=True).stdout.strip()}",
        f"- Command: `{' '.join(['python3', 'build/idle-memory.py', *sys.argv[1:]])}`",
        f"- {args.connections} connections, each one GET /plaintext then idle; RSS (VmRSS) read {args.settle:g} s after the "
        f"last connection opened, minus RSS before; {args.runs} runs per transport, interleaved; medians",
        *[f"- Server ({LABELS.get(c, c)}): `{cmds[c]}`" for c in configs],
        "",
        "| Transport | bytes per idle connection (median) | runs (KiB) |",
        "| --- | ---: | --- |",
    ]
    for c in configs:
        lines.append(f"| {LABELS.get(c, c)} | {medians[c]:,.0f} | {', '.join(f'{v / 1024:.2f}' for v in results[c])} |")
    if "iouring" in medians and "sockets" in medians:
        lines += ["", f"io_uring / Sockets: **{medians['iouring'] / medians['sockets']:.2f}x**"]
    lines += ["", "## Raw runs", "", "| Transport | run | RSS before KiB | RSS after KiB | bytes/connection |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {LABELS.get(c, c)} | {r} | {b:,} | {a:,} | {v:,.0f} |" for c, r, b, a, v in raw]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{now:%Y-%m-%d-%H%M}-idle-memory-{commit}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bench.log(f"results: {out}")


if __name__ == "__main__":
    main()
