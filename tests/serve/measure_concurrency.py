#!/usr/bin/python3
"""Measures what concurrency buys: aggregate decode tokens/s of K simultaneous streams against
one stream, through `dgpt serve` (e.g. with --local-workers 3). A benchmark, not a test.

  /usr/bin/python3 tests/serve/measure_concurrency.py --dgpt build/tools/dgpt \\
      --model models/random-gpt2 --streams 8 --max-tokens 64 -- --local-workers 3
"""
import argparse
import json
import os
import re
import subprocess
import threading
import time
import urllib.request


def start_server(dgpt, model, extra):
    proc = subprocess.Popen([dgpt, "serve", "--listen", "127.0.0.1:0", "--model", model, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()
            return proc, match.group(1)
    proc.kill()
    raise SystemExit("dgpt serve did not start")


def complete(url, model, seed, max_tokens):
    body = json.dumps({"model": model, "prompt": "The pipeline", "max_tokens": max_tokens,
                       "temperature": 1.0, "seed": seed, "ignore_eos": True}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)["usage"]["completion_tokens"]


def run(url, model, streams, max_tokens):
    tokens = [0] * streams
    def one(i):
        tokens[i] = complete(url, model, 100 + i, max_tokens)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(tokens) / (time.monotonic() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dgpt", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("serve_args", nargs="*")
    args = parser.parse_args()
    proc, url = start_server(args.dgpt, args.model, args.serve_args)
    try:
        name = os.path.basename(os.path.normpath(args.model))
        run(url, name, 1, 4)  # warm up: connections, page cache
        single = run(url, name, 1, args.max_tokens)
        many = run(url, name, args.streams, args.max_tokens)
        print(f"1 stream: {single:.1f} tok/s | {args.streams} streams: {many:.1f} tok/s aggregate "
              f"| ratio {many / single:.2f}x")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
