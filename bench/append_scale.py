#!/usr/bin/env python3
"""Append latency as one conversation grows: times single-event appends (a new
participant's entry) at the conversation's 10th, 1,000th and 10,000th participant. Every
participant stays present, the worst case for an append: SPEC 3 needs to know who is
present, and nobody ever leaves. Between the measured points the conversation grows by
requests of 100 entries. Run by bench/append_scale.sh, which starts the service.

    bench/append_scale.py --port 8080 --token "$TOKEN" --bot st-scale [--samples 30]
"""

import argparse
import http.client
import json
import statistics
import time

MARKS = (10, 1000, 10000)


def entry(index):
    return {
        "name": "INTERNAL_TRANSFER_EVENT", "transfertype": "WARM", "transition": "entry",
        "isExtAD": "true", "language": "en", "experience": "voice",
        "participant": {"identity": f"agent-{index:05d}", "name": f"Agent {index}",
                        "type": "agent"},
    }


class Client:
    def __init__(self, port, token, bot, conversation):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.token, self.bot, self.conversation = token, bot, conversation

    def post(self, events):
        body = json.dumps({"conversationId": self.conversation, "botId": self.bot,
                           "events": events})
        started = time.perf_counter()
        self.connection.request(
            "POST", f"/agentassist/api/v1/hooks/{self.bot}", body,
            {"Content-Type": "application/json", "token": self.token})
        response = self.connection.getresponse()
        answer = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"append answered {response.status}: {answer[:300]!r}")
        return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--bot", required=True)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--label", default="")
    arguments = parser.parse_args()
    client = Client(arguments.port, arguments.token, arguments.bot, f"c-scale-{time.time_ns()}")

    participants = 0
    medians = {}
    for mark in MARKS:
        while participants < mark - 1:
            size = min(100, mark - 1 - participants)
            client.post([entry(participants + offset) for offset in range(size)])
            participants += size
        latencies = []
        for _ in range(arguments.samples):
            latencies.append(client.post([entry(participants)]) * 1000)
            participants += 1
        latencies.sort()
        medians[mark] = statistics.median(latencies)
        p90 = latencies[int(len(latencies) * 0.9) - 1]
        print(f"{arguments.label} participant {mark:>6}: append median {medians[mark]:6.2f} ms, "
              f"p90 {p90:6.2f} ms, max {latencies[-1]:6.2f} ms ({arguments.samples} appends)")
    ratio = medians[MARKS[-1]] / medians[MARKS[0]]
    verdict = "within" if ratio <= 2 else "NOT within"
    print(f"{arguments.label} the {MARKS[-1]}th participant's append takes {ratio:.2f}x the "
          f"{MARKS[0]}th's: {verdict} 2x")
    return 0 if ratio <= 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
