#!/usr/bin/python3
"""End-to-end checks of `dgpt serve` from the outside: its page in a real browser, and the
official OpenAI Node client.

Each case is one ctest test (`--case NAME`; `--list` prints them). The browser is Debian's
/usr/bin/chromium driven by playwright-core; the Node packages come from the web_npm_install
fixture (npm_install.py). Nothing is installed here: a missing browser, node or package makes
the case exit 77, which ctest reports as skipped.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")
CHROMIUM = "/usr/bin/chromium"
SKIP = 77

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def skip(reason):
    print("skipped:", reason)
    sys.exit(SKIP)


class Context:
    def __init__(self, args):
        self.dgpt = args.dgpt
        self.work = args.work
        self.node_modules = os.path.join(args.node_prefix, "node_modules")
        self.tokenizer_dir = args.tokenizer_dir if args.tokenizer_dir and os.path.isfile(
            os.path.join(args.tokenizer_dir, "vocab.json")) else None

    def require_node_package(self, name):
        if not shutil.which("node"):
            skip("node is not installed (Debian package nodejs)")
        if not os.path.isfile(os.path.join(self.node_modules, name, "package.json")):
            skip(f"npm package {name} is not in {self.node_modules} (web_npm_install failed?)")

    def model(self, name, n_layer):
        """A tiny random model (made once, reused)."""
        out = os.path.join(self.work, name)
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            args = [MAKE_MODEL, "--out", out, "--n-layer", str(n_layer), "--n-head", "2",
                    "--n-embd", "64", "--seed", "1"]
            if self.tokenizer_dir:
                args += ["--tokenizer-dir", self.tokenizer_dir]
            subprocess.run(["/usr/bin/python3", *args], check=True, stdout=subprocess.DEVNULL)
        return out

    def node(self, script, settings, timeout=240):
        """Runs tests/web/SCRIPT with SETTINGS as JSON; returns the JSON line it prints."""
        env = dict(os.environ, NODE_PATH=self.node_modules)
        try:
            proc = subprocess.run(["node", os.path.join(HERE, script), json.dumps(settings)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            fail(f"{script} timed out after {timeout} s; stderr: {e.stderr!r}")
        check(proc.returncode == 0,
              f"{script}: exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\n"
              f"stderr: {proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


class Server:
    """`dgpt serve` on a free loopback port, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, ctx, model, *extra):
        self.log = []
        self.proc = subprocess.Popen(
            [ctx.dgpt, "serve", "--listen", "127.0.0.1:0", "--model", model, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
        listening = threading.Event()

        def read_stderr():  # keeps reading to the end, so the server never blocks on a full pipe
            for line in self.proc.stderr:
                self.log.append(line)
                if line.startswith("listening on http://") and not listening.is_set():
                    self.url = line.split()[-1].rstrip("/")
                    listening.set()
            listening.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        deadline = time.monotonic() + 120
        while not listening.wait(0.2):
            check(time.monotonic() < deadline, "dgpt serve did not start in 120 s:\n" + self.logs())
        check(self.proc.poll() is None and hasattr(self, "url"),
              f"dgpt serve exited with {self.proc.poll()}:\n" + self.logs())
        print("server:", self.url, " ".join(extra))

    def logs(self):
        return "".join(self.log[-40:])

    def post(self, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if exc[0] is not None:
            print("server log:\n" + self.logs())


@case
def web_page_in_chromium(ctx):
    if not os.access(CHROMIUM, os.X_OK):
        skip(f"{CHROMIUM} is missing (Debian package chromium)")
    ctx.require_node_package("playwright-core")
    model = ctx.model("web-tiny", n_layer=2)
    screenshot = os.path.join(ctx.work, "web_page_in_chromium.png")
    with Server(ctx, model) as server, tempfile.TemporaryDirectory(
            dir=ctx.work, prefix="chromium-profile-") as profile:
        seen = ctx.node("page_in_chromium.js", {
            "url": server.url + "/", "chromium": CHROMIUM, "userDataDir": profile,
            "screenshot": screenshot, "prompt": "Hello from the browser", "maxTokens": 24,
            "longMaxTokens": 100, "temperature": 0.9, "seed": 7})
        print("page saw:", json.dumps(seen, ensure_ascii=False))

        check(seen["modelShown"] == os.path.basename(model), f"model shown: {seen['modelShown']!r}")
        check(seen["errorAfterRun"] is None, f"error line after a good run: {seen['errorAfterRun']!r}")
        check(seen["stopEnabledWhileRunning"] and not seen["stopEnabledAfterRun"],
              "Stop is enabled while generating, and only then")
        check(seen["output"], "streamed text appeared in #output")
        check(seen["outputGrowths"] > 1, f"#output grew {seen['outputGrowths']} times, not in steps")
        check("tok/s" in seen["stats"] and "first token" in seen["stats"],
              f"tokens/s and first-token time shown: {seen['stats']!r}")

        # The page's own request, replayed without streaming, must give the same text.
        body = dict(seen["requestBody"], stream=False)
        body.pop("stream_options", None)  # only meaningful (and allowed) with stream: true
        check(body.get("seed") == 7 and body.get("max_tokens") == 24, f"page sent {body}")
        expected = server.post("/v1/completions", body)["choices"][0]["text"]
        check(seen["output"] == expected,
              f"page showed {seen['output']!r}, non-streamed call gave {expected!r}")

        check(len(seen["stageRows"]) >= 1, "#stages shows a row")
        check(all(len(row) == 5 for row in seen["stageRows"]), f"stage rows: {seen['stageRows']}")

        check(seen["stopClickedWhileRunning"], "Stop was clicked while the run was going")
        check(seen["errorAfterStop"] is None, f"Stop shows no error: {seen['errorAfterStop']!r}")
        check("stopped" in seen["statsAfterStop"], f"stats after Stop: {seen['statsAfterStop']!r}")

        check("temperature" in seen["errorShown"].lower(),
              f"the server's message for temperature -1 is shown: {seen['errorShown']!r}")
        check(not seen["consoleErrors"] or all("400" in e for e in seen["consoleErrors"]),
              f"browser console errors: {seen['consoleErrors']}")
    print("ok: page streamed", repr(seen["output"][:60]), "...; screenshot", screenshot)


@case
def openai_node_client(ctx):
    ctx.require_node_package("openai")
    model = ctx.model("web-openai", n_layer=3)
    with Server(ctx, model, "--local-workers", "3") as server:
        settings = {"baseURL": server.url + "/v1", "prompt": "The official client says",
                    "maxTokens": 20, "temperature": 0.9, "seed": 11}
        got = ctx.node("openai_client.js", settings)
        print("client got:", json.dumps(got, ensure_ascii=False))

        check(got["models"] == [os.path.basename(model)], f"models.list(): {got['models']}")
        check(got["chunks"] > 1, f"the stream came in {got['chunks']} chunk(s)")
        check(got["streamed"], "streamed text is not empty")
        check(got["streamed"] == got["nonStreamed"],
              f"streamed {got['streamed']!r} vs non-streamed {got['nonStreamed']!r}")
        check(got["finishReason"] in ("length", "stop"), f"finish_reason {got['finishReason']!r}")
        check(got["usage"]["completion_tokens"] <= 20, f"usage {got['usage']}")

        # The same request straight over HTTP: the client changed nothing on the way.
        direct = server.post("/v1/completions", {
            "model": got["models"][0], "prompt": settings["prompt"], "max_tokens": 20,
            "temperature": 0.9, "seed": 11})
        check(direct["choices"][0]["text"] == got["nonStreamed"],
              f"raw HTTP {direct['choices'][0]['text']!r} vs client {got['nonStreamed']!r}")
    print("ok: openai client streamed", repr(got["streamed"][:60]), "...")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dgpt", help="path of the dgpt binary")
    parser.add_argument("--work", help="folder for models, profiles and screenshots")
    parser.add_argument("--node-prefix", help="folder web_npm_install installed node_modules into")
    parser.add_argument("--tokenizer-dir", help="GPT-2 vocab.json/merges.txt, if present")
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--list", action="store_true", help="print the case names")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    if not (args.case and args.dgpt and args.work and args.node_prefix):
        parser.error("--case, --dgpt, --work and --node-prefix are required")
    os.makedirs(args.work, exist_ok=True)
    CASES[args.case](Context(args))


if __name__ == "__main__":
    main()
