#!/usr/bin/env python3
"""Memory soak of a daemonhost host (issue 6's success criteria).

Starts `daemonhost run` on a fresh data dir, creates PERSONAS persona users and one human, then
sends RATE chat messages per second to `general` for DURATION seconds while sampling the host's
RSS every SAMPLE seconds, then idles for IDLE seconds (idle RSS must stay flat), then deletes the
personas and checks that none of them is left hosted and that the bus holds no more subscriptions
than before they existed. Prints a table and a verdict against the targets:

  RSS <= 64 MB, growth < 1 MB over the last WINDOW of load (default: the last half of the run,
  at most 30 minutes), idle growth < 1 MB, every request answered and none failed, personas
  replying, no persona or subscription left after the personas are deleted.

Only the Python standard library is used. Traffic goes to the host's Unix socket only.

    python3 scripts/soak.py --binary target/release/daemonhost            # 10 minutes
    python3 scripts/soak.py --binary ... --duration 60 --sample 5          # a quick look
    python3 scripts/soak.py --binary ... --duration 1h                     # the long soak
"""

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


class Conn:
    """A pipelining client: send() never waits for answers; a reader thread matches ids."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_id = 1
        self.lock = threading.Lock()
        self.waiters = {}
        self.errors = {}
        self.answered = 0
        self.failed = 0
        self.closed = False
        threading.Thread(target=self._reader, daemon=True).start()

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _reader(self):
        try:
            while True:
                (n,) = struct.unpack(">I", self._recv_exact(4))
                frame = json.loads(self._recv_exact(n))
                if frame.get("type") != "response":
                    continue
                with self.lock:
                    self.answered += 1
                    if not frame.get("success"):
                        self.failed += 1
                        code = frame.get("error", {}).get("code", "?")
                        self.errors[code] = self.errors.get(code, 0) + 1
                    w = self.waiters.pop(frame.get("id"), None)
                if w is not None:
                    w[1] = frame
                    w[0].set()
        except (EOFError, OSError):
            self.closed = True

    def send(self, command, params=None, wait=False, timeout_ms=10000):
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            waiter = [threading.Event(), None] if wait else None
            if waiter:
                self.waiters[rid] = waiter
        body = json.dumps({"type": "request", "id": rid, "command": command,
                           "params": params or {}, "timeout_ms": timeout_ms}).encode()
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        if waiter:
            if not waiter[0].wait(timeout_ms / 1000 + 5):
                raise TimeoutError(command)
            frame = waiter[1]
            if not frame.get("success"):
                raise RuntimeError(f"{command}: {frame.get('error')}")
            return frame.get("result")
        return None

    def call(self, command, params=None, timeout_ms=10000):
        return self.send(command, params, wait=True, timeout_ms=timeout_ms)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def smaps_summary(pid):
    """RSS by kind of mapping (kB): where the host's memory lives, to tell heap from the rest."""
    out = {}
    kind = None
    exe = os.path.realpath(f"/proc/{pid}/exe")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                if path == "[heap]":
                    kind = "main heap (brk)"
                elif path.startswith("[stack"):
                    kind = "main stack"
                elif path == "":
                    kind = "anonymous (thread arenas, stacks, mmap)"
                elif path.startswith("["):
                    kind = path
                elif path == exe:
                    kind = "the binary"
                elif path.endswith("-shm"):
                    kind = "SQLite -shm"
                else:
                    kind = "shared libraries and other files"
            elif head[0] == "Rss:" and kind:
                out[kind] = out.get(kind, 0) + int(head[1])
    return out


def duration(text):
    """Seconds from `600`, `90s`, `10m` or `1h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--duration", type=duration, default=600,
                    help="load time: seconds, or with a unit (90s, 10m, 1h); default 600")
    ap.add_argument("--window", type=duration, default=None,
                    help="the growth window at the end of the load (default: half the load, at most 30m)")
    ap.add_argument("--idle", type=int, default=60, help="seconds of idle sampling after the load")
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second (default 50)")
    ap.add_argument("--config", help="a TOML config file for the host (default: embedded defaults)")
    ap.add_argument("--personas", type=int, default=20)
    ap.add_argument("--sample", type=int, default=10, help="seconds between RSS samples")
    ap.add_argument("--rss-limit-mb", type=float, default=64.0)
    ap.add_argument("--growth-limit-mb", type=float, default=1.0)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="dhsoak", dir="/tmp")
    data = os.path.join(tmp, "d")
    log = open(os.path.join(tmp, "host.log"), "w")
    cmd = [args.binary, "--data-dir", data, "run"]
    if args.config:
        cmd += ["--config", args.config]
    host = subprocess.Popen(cmd, stdout=log, stderr=log)
    sock = os.path.join(data, "daemonhost.sock")
    deadline = time.time() + 30
    conn = None
    while time.time() < deadline:
        try:
            conn = Conn(sock)
            break
        except OSError:
            time.sleep(0.01)
    if conn is None:
        print("host did not come up; log in", tmp)
        return 2
    # Wait for everything to be READY.
    while True:
        st = conn.call("health/status")
        if st["ready"] == st["count"]:
            break
        time.sleep(0.05)

    human = conn.call("user/create", {"displayName": "Soak Human", "type": "human"})
    personas = [conn.call("user/create", {"displayName": f"Persona{i:02d}", "type": "persona",
                                          "uniqueId": f"persona{i:02d}"}) for i in range(args.personas)]
    while conn.call("persona/list")["count"] < args.personas:
        time.sleep(0.05)
    bus_before = conn.call("health/metrics").get("bus", {}).get("subscriptions")

    samples = []
    samples_replies = []
    sent = 0
    start = time.time()
    next_sample = start
    interval = 1.0 / args.rate
    words = ("hello status update question deploy search memory rust daemon persona room chat "
             "latency index query archive budget energy mood tick reply context").split()
    print(f"host pid {host.pid}, data dir {data}")
    print(f"{'t_s':>6} {'phase':>6} {'rss_mb':>8} {'sent':>8} {'answered':>9} {'errors':>7} {'replies':>8}")

    def sample(phase):
        t = time.time() - start
        rss = rss_kb(host.pid) / 1024.0
        ps = conn.call("persona/status")
        replies = sum(p["counters"]["replies"] for p in ps["personas"])
        samples.append((t, phase, rss))
        samples_replies.append(replies)
        print(f"{t:6.0f} {phase:>6} {rss:8.2f} {sent:8d} {conn.answered:9d} {conn.failed:7d} {replies:8d}", flush=True)

    while time.time() - start < args.duration:
        now = time.time()
        if now >= next_sample:
            sample("load")
            next_sample += args.sample
        text = " ".join(random.choice(words) for _ in range(random.randint(4, 16)))
        if random.random() < 0.1:
            text += f" @{random.choice(personas)['displayName']}"
        conn.send("chat/send", {"room": "general", "message": text, "sender": human["id"]})
        sent += 1
        target = start + sent * interval
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
    load_end = time.time()
    while time.time() - load_end < args.idle:
        if time.time() >= next_sample:
            sample("idle")
            next_sample += args.sample
        time.sleep(0.2)

    try:
        parts = smaps_summary(host.pid)
        print("\nRSS by mapping at the end of the run:")
        for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"  {v / 1024.0:7.2f} MB  {k}")
    except OSError as e:
        print(f"(no smaps: {e})")

    # Stop all personas: delete their users; none may stay hosted, no subscription of theirs left.
    for p in personas:
        conn.call("data/delete", {"collection": "users", "id": p["id"]})
    while conn.call("persona/list")["count"] > 0:
        time.sleep(0.05)
    bus_after = conn.call("health/metrics").get("bus", {}).get("subscriptions")

    host.terminate()
    host.wait(timeout=30)

    load = [s for s in samples if s[1] == "load"]
    idle = [s for s in samples if s[1] == "idle"]
    warm = [s for s in load if s[0] >= 60] or load
    window = args.window if args.window is not None else min(args.duration // 2, 1800)
    last5 = [s for s in load if s[0] >= args.duration - window] or load
    peak = max(s[2] for s in samples)
    growth = max(s[2] for s in last5) - min(s[2] for s in last5)
    idle_growth = (max(s[2] for s in idle) - min(s[2] for s in idle)) if idle else 0.0
    print()
    print(f"messages sent {sent}, answered {conn.answered}, errors {conn.failed} {conn.errors}")
    print(f"peak RSS {peak:.2f} MB (limit {args.rss_limit_mb}), after warm-up max {max(s[2] for s in warm):.2f} MB")
    print(f"growth over the last {window} s of load {growth:.2f} MB (limit {args.growth_limit_mb})")
    # Also the trend: a least-squares line through those samples, times their span. The range
    # above counts a transient (memory taken and given back between two samples) as growth;
    # the trend does not. The verdict uses the range.
    if len(last5) >= 2:
        n = len(last5)
        mt = sum(s[0] for s in last5) / n
        mr = sum(s[2] for s in last5) / n
        var = sum((s[0] - mt) ** 2 for s in last5)
        slope = sum((s[0] - mt) * (s[2] - mr) for s in last5) / var if var else 0.0
        span = last5[-1][0] - last5[0][0]
        print(f"  trend over the same samples {slope * span:+.2f} MB ({slope * 60:+.3f} MB/min)")
    print(f"idle growth {idle_growth:.2f} MB (limit {args.growth_limit_mb})")
    print(f"bus subscriptions before personas {bus_before}, after deleting them {bus_after}")
    replies = samples_replies[-1] if samples_replies else 0
    checks = [
        (f"peak RSS {peak:.2f} MB <= {args.rss_limit_mb} MB", peak <= args.rss_limit_mb),
        (f"growth {growth:.2f} MB < {args.growth_limit_mb} MB", growth < args.growth_limit_mb),
        (f"idle growth {idle_growth:.2f} MB < {args.growth_limit_mb} MB", idle_growth < args.growth_limit_mb),
        (f"every send answered ({conn.answered} of {sent} answered)", conn.answered + conn.failed >= sent),
        (f"no send failed ({conn.failed} failed)", conn.failed == 0),
        (f"personas replied ({replies} replies)", replies > 0),
        (f"no subscription left ({bus_before} before, {bus_after} after)", bus_after == bus_before),
    ]
    for what, good in checks:
        print(f"  {'ok  ' if good else 'FAIL'} {what}")
    ok = all(good for _, good in checks)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
