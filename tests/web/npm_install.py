#!/usr/bin/python3
"""ctest fixture: installs the pinned Node packages of tests/web/package.json into --prefix.

Never fails: without node/npm or the registry the web tests find no packages and skip (77).
playwright-core downloads no browser; the tests use Debian's /usr/bin/chromium.
"""
import argparse
import filecmp
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = ("openai", "playwright-core")


def installed(prefix):
    return all(os.path.isfile(os.path.join(prefix, "node_modules", name, "package.json"))
               for name in PACKAGES)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prefix", required=True, help="folder for package.json and node_modules")
    args = parser.parse_args()

    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        print("skipped: node or npm is not installed (Debian packages nodejs, npm)")
        return 0
    os.makedirs(args.prefix, exist_ok=True)
    manifest = os.path.join(args.prefix, "package.json")
    if installed(args.prefix) and os.path.isfile(manifest) and filecmp.cmp(
            manifest, os.path.join(HERE, "package.json"), shallow=False):
        print("ok: packages already installed in", args.prefix)
        return 0
    for name in ("package.json", "package-lock.json"):
        if os.path.isfile(os.path.join(HERE, name)):
            shutil.copyfile(os.path.join(HERE, name), os.path.join(args.prefix, name))

    # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: belt and braces; playwright-core has no install script.
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    try:
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", args.prefix],
                              env=env, capture_output=True, text=True, timeout=600)
        output, failed = proc.stdout + proc.stderr, proc.returncode != 0
    except subprocess.TimeoutExpired:
        output, failed = "npm install timed out after 600 s", True
    print(output.strip())
    if failed or not installed(args.prefix):
        print("warning: npm install failed; the web tests will skip")
    else:
        print("ok: installed", ", ".join(PACKAGES), "into", args.prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
