#!/usr/bin/env python3
"""Slowloris against a running service: many idle sockets and trickled request heads,
held (and re-opened when the server cuts them) while a well-behaved client posts valid
ingests and times each answer. Reports the ingest latencies, the attacker sockets the
server held and cut, and the service's resident memory before, at peak and after.

    bench/slowloris.py --port 8080 --pid 1234 --token "$TOKEN" [--idle 5000 --trickle 400]

Only ever talks to 127.0.0.1. Run by bench/slowloris.sh, which starts the service."""

import argparse
import asyncio
import json
import multiprocessing
import resource
import statistics
import time

HOST = "127.0.0.1"
BOT = "st-slowloris"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def ingest(port, token, sequence):
    body = json.dumps({
        "conversationId": f"c-slowloris-{sequence % 50}",
        "botId": BOT,
        "events": [{
            "name": "INTERNAL_TRANSFER_EVENT", "transfertype": "NA", "transition": "entry",
            "isExtAD": "true", "language": "en", "experience": "chat",
            "participant": {"identity": f"agent-{sequence}", "name": "Agent", "type": "agent"},
        }],
    }).encode()
    request = (
        f"POST /agentassist/api/v1/hooks/{BOT} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\ntoken: {token}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    elapsed = time.monotonic() - started
    writer.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0
    return status, elapsed


class Attackers:
    """Keeps `idle` silent sockets and `trickle` unfinished heads open until stopped."""

    def __init__(self, port, idle, trickle):
        self.port, self.idle, self.trickle = port, idle, trickle
        self.open_now = 0
        self.peak_open = 0
        self.cut = 0
        self.refused = 0
        self.stopping = asyncio.Event()

    async def hold(self, trickled, delay):
        await asyncio.sleep(delay)
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                self.refused += 1
                await asyncio.sleep(0.5)
                continue
            self.open_now += 1
            self.peak_open = max(self.peak_open, self.open_now)
            try:
                if trickled:
                    writer.write(f"POST /agentassist/api/v1/hooks/{BOT} HTTP/1.1\r\n".encode())
                    line = 0
                    while not self.stopping.is_set() and not reader.at_eof():
                        writer.write(f"x-slow-{line}: {'a' * 100}\r\n".encode())
                        await writer.drain()
                        line += 1
                        try:
                            if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                                break
                        except asyncio.TimeoutError:
                            pass
                else:
                    stop = asyncio.ensure_future(self.stopping.wait())
                    closed = asyncio.ensure_future(reader.read())
                    await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
                    stop.cancel()
                    closed.cancel()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                self.open_now -= 1
                writer.close()
            if not self.stopping.is_set():
                self.cut += 1

    def start(self):
        ramp = 2.0  # seconds over which the attackers connect
        total = self.idle + self.trickle
        return [
            asyncio.ensure_future(self.hold(index < self.trickle, ramp * index / total))
            for index in range(total)
        ]


async def measure(port, token, count, pause):
    latencies, statuses = [], []
    for sequence in range(count):
        status, elapsed = await ingest(port, token, sequence)
        statuses.append(status)
        latencies.append(elapsed * 1000)
        await asyncio.sleep(pause)
    return statuses, latencies


def summary(latencies):
    ordered = sorted(latencies)
    return (f"p50 {statistics.median(ordered):.1f} ms, max {ordered[-1]:.1f} ms "
            f"({len(ordered)} requests)")


def probe(port, token, seconds, results):
    """In a process of its own, so that the attackers' event loop cannot delay it."""

    async def run():
        latencies, statuses, slow = [], [], []
        started = time.monotonic()
        sequence = 1000
        while time.monotonic() - started < seconds:
            status, elapsed = await ingest(port, token, sequence)
            sequence += 1
            statuses.append(status)
            latencies.append(elapsed * 1000)
            if elapsed > 0.1:
                slow.append(f"{time.monotonic() - started:.1f} s: {elapsed * 1000:.0f} ms")
            await asyncio.sleep(0.1)
        results.put((latencies, statuses, slow))

    asyncio.run(run())


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--trickle", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=25.0)
    arguments = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    before = rss_kib(arguments.pid)
    statuses, baseline = await measure(arguments.port, arguments.token, 20, 0.05)
    print(f"before the attack: RSS {before / 1024:.1f} MiB; ingest {summary(baseline)}, "
          f"statuses {sorted(set(statuses))}")

    attackers = Attackers(arguments.port, arguments.idle, arguments.trickle)
    tasks = attackers.start()
    results = multiprocessing.Queue()
    prober = multiprocessing.Process(
        target=probe, args=(arguments.port, arguments.token, arguments.seconds, results))
    prober.start()
    peak_rss = before
    while prober.is_alive():
        peak_rss = max(peak_rss, rss_kib(arguments.pid))
        await asyncio.sleep(0.2)
    latencies, all_statuses, slow = results.get()
    held = attackers.open_now
    attackers.stopping.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(1.0)
    after = rss_kib(arguments.pid)

    print(f"attack: {arguments.idle} idle sockets + {arguments.trickle} trickled heads "
          f"for {arguments.seconds:.0f} s; attacker sockets open at peak {attackers.peak_open}, "
          f"at the end {held}; cut by the server {attackers.cut}; connects refused "
          f"{attackers.refused}")
    over_100 = sum(1 for latency in latencies if latency > 100)
    print(f"valid ingest during the attack (a separate process): {summary(latencies)}; "
          f"over 100 ms: {over_100}; statuses {sorted(set(all_statuses))}")
    if slow:
        print("answers over 100 ms, at: " + ", ".join(slow))
    print(f"service RSS: before {before / 1024:.1f} MiB, peak {peak_rss / 1024:.1f} MiB "
          f"(+{(peak_rss - before) / 1024:.1f} MiB), after {after / 1024:.1f} MiB")
    ok = all(status == 200 for status in all_statuses) and over_100 == 0
    print("result: " + ("every valid ingest answered 200 within 100 ms" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
