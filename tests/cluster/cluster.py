#!/usr/bin/python3
"""The checks of tests/cluster/run_cluster.sh, run inside the boss network namespace.

run_cluster.sh makes the namespaces (boss, w1..w3 and a switch) and their links; this script
starts `dgpt worker` in each worker namespace and `dgpt serve` here, and checks over HTTP:
  - a completion through the cluster equals the single-process `dgpt generate --json`;
  - a worker killed with SIGKILL: the request during the outage is a 503 naming the stage, the
    next one after the restart succeeds (and is still identical);
  - a link cut (`ip link set DEV down`) and restored: the same;
  - the workers' firewall (deploy/nftables/dgpt-worker.nft, when nft works here) lets the boss
    and the previous stage in and drops an outsider on the worker port;
  - per-hop round trips and per-token latency under each link profile (none, Pi Ethernet,
    Wi-Fi), printed to the log; the output stays identical under every profile.
Traffic stays between the 10.77.0.x addresses of these namespaces.

  cluster.py run --dgpt BIN --work DIR --ns-boss NS --ns-switch NS --ns-outsider NS
                 --ns-workers NS1,NS2,NS3
  cluster.py echo-server HOST PORT       (an RTT echo server, run in each namespace)
  cluster.py rtt HOST PORT COUNT         (prints round trips in ms, one per line)
  cluster.py bulk HOST PORT BYTES        (prints the echo throughput in Mbit/s)
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"
BOSS = "10.77.0.1"
WORKER_PORT = 7070
SERVE_PORT = 8080
ECHO_PORT = 7099
SERVE_TIMEOUT_S = 5
# One-way delay, jitter and rate per host-to-switch cable; each qdisc (host egress and switch
# egress) gets half the delay, so a host-to-host hop (two cables) sees the profile's delay once
# in each direction: RTT = 2 * (delay) + serialization.
PROFILES = {
    "none": None,
    "pi-ethernet": {"rate": "1gbit", "delay_ms": 0.2, "jitter_ms": 0.0},
    "wifi": {"rate": "40mbit", "delay_ms": 3.0, "jitter_ms": 1.0},
}
PROMPT = "The cluster of small computers"


def log(*args):
    print(*args, flush=True)


def fail(message):
    log("FAIL:", message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def sh(*args, check_status=True, **kwargs):
    proc = subprocess.run(list(args), capture_output=True, text=True, **kwargs)
    if check_status and proc.returncode != 0:
        fail(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


# ---- small servers/clients run in other namespaces -------------------------------------------


def echo_server(host, port):
    srv = socket.create_server((host, port))
    srv.settimeout(None)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)


def rtt(host, port, count):
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"x")  # warm up
        s.recv(1)
        for _ in range(count):
            start = time.perf_counter()
            s.sendall(b"x")
            check(s.recv(1) == b"x", "echo server closed")
            print(f"{(time.perf_counter() - start) * 1e3:.4f}")


def bulk(host, port, size):
    """Sends SIZE bytes through the echo server and reads them back; prints Mbit/s (one way)."""
    import threading
    with socket.create_connection((host, port), timeout=30) as s:
        payload = b"\0" * size
        start = time.perf_counter()
        sender = threading.Thread(target=s.sendall, args=(payload,))
        sender.start()
        received = 0
        while received < size:
            chunk = s.recv(1 << 16)
            check(chunk, "echo server closed")
            received += len(chunk)
        sender.join()
        print(f"{size * 8 / (time.perf_counter() - start) / 1e6:.1f}")


# ---- the cluster -------------------------------------------------------------------------------


class Cluster:
    def __init__(self, args):
        self.dgpt, self.work = args.dgpt, args.work
        self.ns_boss, self.ns_switch = args.ns_boss, args.ns_switch
        self.ns_outsider = args.ns_outsider
        self.ns_workers = args.ns_workers.split(",")
        self.addresses = [f"10.77.0.{11 + i}" for i in range(len(self.ns_workers))]
        self.workers = [None] * len(self.ns_workers)
        self.echo = []
        self.serve = None
        self.netem = None
        self.shaping = True  # False: neither netem nor tbf
        self.model_name = None

    # processes
    def start_worker(self, i):
        log_file = open(os.path.join(self.work, f"w{i + 1}.log"), "ab")
        self.workers[i] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_workers[i], self.dgpt, "worker", "--listen",
             f"{self.addresses[i]}:{WORKER_PORT}", "--model",
             os.path.join(self.work, "shards", f"stage-{i}"), "--threads", "1",
             "--auth-key-file", self.key, "--name", f"w{i + 1}", "--idle-timeout", "120"],
            stdout=subprocess.DEVNULL, stderr=log_file)
        self.wait_port(self.addresses[i], WORKER_PORT, self.workers[i], f"w{i + 1}")

    def firewall(self):
        """Loads deploy/nftables/dgpt-worker.nft (its addresses are this layout's) in every
        worker; returns False when nft is unavailable. The RTT echo port is opened on top."""
        if subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode != 0:
            log("NOTE: nft not found (Debian package nftables): the worker firewall is not tested")
            return False
        rules = os.path.join(ROOT, "deploy", "nftables", "dgpt-worker.nft")
        for ns in self.ns_workers:
            proc = sh("ip", "netns", "exec", ns, "nft", "-f", rules, check_status=False)
            if proc.returncode != 0:
                log(f"NOTE: nft cannot load rules here ({proc.stderr.strip()}): "
                    "the firewall is not tested")
                return False
            sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "dgpt_worker", "input",
               "tcp", "dport", str(ECHO_PORT), "accept")
        return True

    def reachable_from(self, ns, host, port):
        code = ("import socket, sys\ntry:\n"
                " socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()\n"
                "except OSError:\n sys.exit(1)")
        return sh("ip", "netns", "exec", ns, PY, "-c", code, host, str(port),
                  check_status=False).returncode == 0

    def wait_port(self, host, port, proc, name, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                fail(f"{name} exited with {proc.returncode}: {self.tail(name)}")
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        fail(f"{name} did not listen on {host}:{port} within {timeout} s: {self.tail(name)}")

    def tail(self, name):
        path = os.path.join(self.work, f"{name}.log")
        if not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def start_serve(self):
        log_file = open(os.path.join(self.work, "serve.log"), "ab")
        self.serve = subprocess.Popen(
            [self.dgpt, "serve", "--listen", f"{BOSS}:{SERVE_PORT}", "--model",
             os.path.join(self.work, "shards", "coordinator"), "--workers",
             ",".join(f"{a}:{WORKER_PORT}" for a in self.addresses), "--layers", self.stages,
             "--auth-key-file", self.key, "--threads", "1", "--max-sequences", "2",
             "--timeout", str(SERVE_TIMEOUT_S)],
            stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.time() + 60
        while time.time() < deadline:
            check(self.serve.poll() is None,
                  f"dgpt serve exited with {self.serve.returncode}: {self.tail('serve')}")
            status, health = self.http("GET", "/health", timeout=5, quiet=True)
            if status == 200:
                self.model_name = health["model"]
                return
            time.sleep(0.3)
        fail(f"dgpt serve did not answer /health within 60 s: {self.tail('serve')}")

    def stop_all(self):
        procs = [p for p in [self.serve, *self.workers, *self.echo] if p and p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # HTTP (from the boss namespace, to the boss's private address)
    def http(self, method, path, body=None, timeout=60, quiet=False):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{BOSS}:{SERVE_PORT}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"raw": text}
        except (OSError, ValueError) as e:
            if quiet:
                return None, None
            fail(f"{method} {path}: {e}")

    def complete(self, settings, timeout=60):
        body = {"model": self.model_name, "prompt": PROMPT, "max_tokens": settings["max_tokens"],
                "temperature": settings["temperature"], "top_k": settings["top_k"],
                "top_p": settings["top_p"], "seed": settings["seed"]}
        start = time.perf_counter()
        status, answer = self.http("POST", "/v1/completions", body, timeout=timeout)
        return status, answer, time.perf_counter() - start

    # links
    def veths(self):
        """(namespace, device) of both ends of every cable: host egress and switch egress."""
        hosts = [self.ns_boss, *self.ns_workers]
        ends = [(ns, "eth0") for ns in hosts]
        ends += [(self.ns_switch, f"h{k}") for k in range(len(hosts))]  # h0 boss, h1.. workers
        return ends

    def shape(self, profile):
        for ns, dev in self.veths():
            sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check_status=False)
            if profile is None or not self.shaping:
                continue
            half = profile["delay_ms"] / 2
            jitter = profile["jitter_ms"] / 2
            if self.netem:
                cmd = ["netem", "delay", f"{half}ms"]
                if jitter:
                    cmd += [f"{jitter}ms", "distribution", "normal"]
                cmd += ["rate", profile["rate"], "limit", "10000"]
            else:
                burst = "256kb" if profile["rate"].endswith("gbit") else "32kb"
                cmd = ["tbf", "rate", profile["rate"], "burst", burst, "latency", "100ms"]
            sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *cmd)

    def detect_netem(self):
        ns, dev = self.veths()[0]
        proc = sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", "delay", "1ms",
                  check_status=False)
        sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check_status=False)
        self.netem = proc.returncode == 0
        if self.netem:
            return
        tbf = sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", "1gbit",
                 "burst", "256kb", "latency", "100ms", check_status=False)
        sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check_status=False)
        self.shaping = tbf.returncode == 0
        log("NOTE: tc netem is not available in this kernel (" + proc.stderr.strip() + "): " +
            ("links are shaped by rate only (tbf), without delay or jitter" if self.shaping
             else "nor tbf: the links are not shaped at all"))

    def hop_rtts(self, count=50):
        """Median/p90 round trip (ms) of each pipeline hop, measured from its sending side."""
        chain = [(self.ns_boss, BOSS)] + list(zip(self.ns_workers, self.addresses))
        hops = []
        for k in range(len(chain)):
            src_ns, src = chain[k]
            dst_ns, dst = chain[(k + 1) % len(chain)]
            proc = sh("ip", "netns", "exec", src_ns, PY, __file__, "rtt", dst, str(ECHO_PORT),
                      str(count))
            samples = sorted(float(x) for x in proc.stdout.split())
            hops.append((f"{src} -> {dst}", statistics.median(samples),
                         samples[int(len(samples) * 0.9) - 1]))
        return hops

    def throughput(self, size=4 << 20):
        """Mbit/s from the boss to w1 and back (both cables' qdiscs on the way)."""
        proc = sh(PY, __file__, "bulk", self.addresses[0], str(ECHO_PORT), str(size))
        return float(proc.stdout)


def run(args):
    cluster = Cluster(args)
    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model")
    if not os.path.isfile(os.path.join(model, "model.safetensors")):
        sh(PY, os.path.join(ROOT, "weights", "make_random_model.py"), "--n-layer", "3",
           "--n-head", "4", "--n-embd", "128", "--seed", "1", "--out", model)
    n = len(cluster.ns_workers)
    cluster.stages = ",".join(f"{i}:{i + 1}" for i in range(n))  # one layer per worker
    sh(args.dgpt, "split", "--model", model, "--stages", cluster.stages, "--out",
       os.path.join(args.work, "shards"))
    cluster.key = os.path.join(args.work, "key")
    with open(cluster.key, "w") as f:
        f.write(os.urandom(32).hex() + "\n")

    settings = {"max_tokens": 24, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 5}
    greedy = dict(settings, temperature=0.0, seed=1, max_tokens=32)

    def reference(s):
        proc = sh(args.dgpt, "generate", "--model", model, "--json", "--threads", "1", "--prompt",
                  PROMPT, "--max-tokens", str(s["max_tokens"]), "--temperature",
                  str(s["temperature"]), "--top-k", str(s["top_k"]), "--top-p", str(s["top_p"]),
                  "--seed", str(s["seed"]))
        return json.loads(proc.stdout)

    ref, ref_greedy = reference(settings), reference(greedy)
    log(f"single process: {len(ref['generated_ids'])} tokens, text {ref['text']!r}")

    try:
        # RTT echo servers, one per namespace, on the private addresses.
        for ns, host in [(cluster.ns_boss, BOSS), *zip(cluster.ns_workers, cluster.addresses)]:
            p = subprocess.Popen(["ip", "netns", "exec", ns, PY, __file__, "echo-server", host,
                                  str(ECHO_PORT)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            cluster.echo.append(p)
            cluster.wait_port(host, ECHO_PORT, p, f"echo server {host}")
        firewalled = cluster.firewall()
        for i in range(n):
            cluster.start_worker(i)
        cluster.start_serve()
        status, health = cluster.http("GET", "/health")
        log(f"/health: {json.dumps(health)}")
        check(health.get("status") == "ok" and len(health.get("stages", [])) == n,
              f"/health is not ok with {n} stages: {health}")

        def expect_same(what, s, expected, timeout=60):
            status, answer, seconds = cluster.complete(s, timeout)
            check(status == 200, f"{what}: HTTP {status}: {answer}")
            text = answer["choices"][0]["text"]
            check(text == expected["text"],
                  f"{what}: the cluster's text differs from the single process\n"
                  f"cluster: {text!r}\nsingle:  {expected['text']!r}")
            return answer, seconds

        # 1. Same text as the single process (sampled and greedy), and through `dgpt generate
        #    --workers` (the CLI's pipeline) too.
        expect_same("sampled completion", settings, ref)
        expect_same("greedy completion", greedy, ref_greedy)
        coordinator_shard = os.path.join(args.work, "shards", "coordinator")
        proc = sh(args.dgpt, "generate", "--model", coordinator_shard,
                  "--workers", ",".join(f"{a}:{WORKER_PORT}" for a in cluster.addresses),
                  "--layers", cluster.stages, "--auth-key-file", cluster.key, "--json",
                  "--threads", "1", "--prompt", PROMPT, "--max-tokens", str(settings["max_tokens"]),
                  "--temperature", str(settings["temperature"]), "--top-k", "40", "--top-p",
                  "0.95", "--seed", str(settings["seed"]))
        cli = json.loads(proc.stdout)
        check(cli["generated_ids"] == ref["generated_ids"],
              f"dgpt generate --workers: {cli['generated_ids']} != {ref['generated_ids']}")
        log("PASS identical output: HTTP completions (sampled, greedy) and dgpt generate "
            "--workers equal the single process")
        if firewalled:
            # The pipeline above ran through the firewalls (boss -> w1 -> w2 -> w3 admitted).
            for address in cluster.addresses:
                check(not cluster.reachable_from(cluster.ns_outsider, address, WORKER_PORT),
                      f"the outsider 10.77.0.99 reached {address}:{WORKER_PORT} through the "
                      "firewall")
            check(cluster.reachable_from(cluster.ns_outsider, cluster.addresses[0], ECHO_PORT),
                  "the outsider cannot reach an open port: the firewall check proves nothing")
            log("PASS firewall (deploy/nftables/dgpt-worker.nft): the pipeline runs through it; "
                "the outsider 10.77.0.99 is dropped on port 7070 of every worker")

        def expect_stage_error(what, stage_index, max_seconds):
            status, answer, seconds = cluster.complete(settings, timeout=max_seconds + 30)
            message = json.dumps(answer)
            stage = f"stage {stage_index + 1}/{n}"
            address = f"{cluster.addresses[stage_index]}:{WORKER_PORT}"
            log(f"{what}: HTTP {status} after {seconds:.2f} s: {message}")
            check(status == 503, f"{what}: expected HTTP 503, got {status}: {message}")
            check(stage in message and address in message,
                  f"{what}: the error does not name {stage} ({address}): {message}")
            check(seconds <= max_seconds, f"{what}: took {seconds:.1f} s (> {max_seconds} s)")
            status, health = cluster.http("GET", "/health")
            log(f"{what}: /health {status}: {json.dumps(health)}")
            check(status == 503 and health.get("status") != "ok",
                  f"{what}: /health still ok during the outage: {health}")
            down = [s for s in health["stages"] if not s["up"]]
            check(any(address == s["address"] for s in down),
                  f"{what}: /health does not mark {address} down: {health}")

        def expect_recovered(what):
            deadline = time.time() + 30
            while True:  # the coordinator may need one health round to see the stage again
                status, answer, _ = cluster.complete(settings)
                if status == 200 or time.time() > deadline:
                    break
                time.sleep(1)
            check(status == 200, f"{what}: the request after recovery failed: {status} {answer}")
            check(answer["choices"][0]["text"] == ref["text"], f"{what}: text differs after "
                  f"recovery: {answer['choices'][0]['text']!r}")
            status, health = cluster.http("GET", "/health")
            check(status == 200 and health["status"] == "ok", f"{what}: /health after recovery: "
                  f"{health}")
            log(f"PASS {what}: 503 naming the stage during the outage, identical output after")

        # 2. A worker killed and restarted.
        victim = 1
        cluster.workers[victim].send_signal(signal.SIGKILL)
        cluster.workers[victim].wait()
        expect_stage_error(f"w{victim + 1} killed", victim, SERVE_TIMEOUT_S + 5)
        cluster.start_worker(victim)
        expect_recovered(f"w{victim + 1} killed and restarted")

        # 3. A link cut and restored: the switch side of the last worker's cable.
        cut = n - 1
        dev = f"h{cut + 1}"
        sh("ip", "-n", cluster.ns_switch, "link", "set", dev, "down")
        try:
            expect_stage_error(f"link of w{cut + 1} down", cut, 3 * SERVE_TIMEOUT_S + 5)
        finally:
            sh("ip", "-n", cluster.ns_switch, "link", "set", dev, "up")
        expect_recovered(f"link of w{cut + 1} cut and restored")

        # 4. Latency under each link profile.
        cluster.detect_netem()
        lat = dict(greedy, max_tokens=32)
        rows = []
        for name, profile in PROFILES.items():
            cluster.shape(profile)
            hops = cluster.hop_rtts()
            mbits = cluster.throughput()
            cluster.complete(lat)  # warm up
            answer, seconds = expect_same(f"completion under {name}", lat, ref_greedy)
            tokens = answer["usage"]["completion_tokens"]
            _, health = cluster.http("GET", "/health")
            stage_ms = [s.get("last_latency_ms") for s in health["stages"]]
            rows.append((name, profile, hops, mbits, seconds, tokens, stage_ms))
        cluster.shape(None)
        log("")
        log("Per-hop latency (TCP echo round trip, 50 samples, median / p90 ms) and a fixed "
            f"{lat['max_tokens']}-token greedy completion through {n} stages:")
        if not cluster.netem:
            log("(netem unavailable: profiles only limit the rate; delays are the veth baseline)")
        for name, profile, hops, mbits, seconds, tokens, stage_ms in rows:
            if profile is None or not cluster.shaping:
                desc = "unshaped veth"
            elif not cluster.netem:
                desc = f"{profile['rate']} rate limit only"
            else:
                desc = (f"{profile['rate']}, {profile['delay_ms']} ms one-way" +
                        (f" +- {profile['jitter_ms']} ms" if profile["jitter_ms"] else ""))
            log(f"  {name:12} ({desc})")
            for hop, median, p90 in hops:
                log(f"    {hop:26} {median:8.3f} / {p90:8.3f} ms")
            log(f"    {'bulk 10.77.0.1 <-> .11':26} {mbits:8.1f} Mbit/s")
            log(f"    completion: {seconds * 1e3:8.1f} ms for {tokens} tokens = "
                f"{seconds * 1e3 / max(tokens, 1):.2f} ms/token; coordinator->stage ping (ms): "
                f"{stage_ms}")
        log("PASS latency measured; output identical under every profile")
    finally:
        if cluster.netem is not None:
            cluster.shape(None)
        cluster.stop_all()
    for i, w in enumerate(cluster.workers):
        check(w.returncode == 0, f"w{i + 1} exited with {w.returncode} on SIGTERM: "
              f"{cluster.tail(f'w{i + 1}')}")
    check(cluster.serve.returncode == 0, f"dgpt serve exited with {cluster.serve.returncode}")
    log("PASS")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "echo-server":
        echo_server(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "bulk":
        bulk(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "rtt":
        rtt(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["run"])
    parser.add_argument("--dgpt", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--ns-boss", required=True)
    parser.add_argument("--ns-switch", required=True)
    parser.add_argument("--ns-outsider", required=True)
    parser.add_argument("--ns-workers", required=True)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
