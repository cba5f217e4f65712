#!/usr/bin/python3
"""Expands a systemd unit's ExecStart=/ExecStartPost= the way systemd does, so a test can run
exactly the command line the unit would run (no systemd needed).

  unit_exec.py argv UNIT INSTANCE KEY [ENVFILE...] [--set K=V...]
      prints the argv of KEY (ExecStart or ExecStartPost), NUL-separated: Environment= defaults,
      then each ENVFILE (EnvironmentFile= syntax), then --set overrides; "${X}" is one argument,
      "$X" is split on whitespace; %i, %I, %H, %% are replaced.
  unit_exec.py env UNIT INSTANCE [ENVFILE...] [--set K=V...]
      prints the resulting environment, one K=V per line.
  unit_exec.py mdwe CMD [ARG...]
      execs CMD with the kernel's PR_SET_MDWE(REFUSE_EXEC_GAIN): what MemoryDenyWriteExecute=
      enforces (a W+X mapping or making memory executable fails). Exit 3 if the kernel lacks it.
"""
import ctypes
import os
import re
import shlex
import socket
import sys


def unit_lines(path):
    """(key, value) pairs of the [Service] section, continuation lines joined."""
    pairs, section, pending = [], None, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if pending:
                line = pending + " " + line.strip()
                pending = ""
            if line.endswith("\\"):
                pending = line[:-1].rstrip()
                continue
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            if stripped.startswith("["):
                section = stripped.strip("[]")
                continue
            key, _, value = stripped.partition("=")
            pairs.append((section, key.strip(), value.strip()))
    return pairs


def specifiers(text, instance):
    table = {"i": instance, "I": instance, "H": socket.gethostname(), "%": "%"}
    return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), text)


def parse_env_file(path, env):
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            key, sep, value = line.partition("=")
            if not sep:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            env[key.strip()] = value


def environment(unit, instance, rest):
    env = {}
    for section, key, value in unit_lines(unit):
        if section == "Service" and key == "Environment":
            for word in shlex.split(specifiers(value, instance)):
                k, _, v = word.partition("=")
                env[k] = v
    i = 0
    while i < len(rest):
        if rest[i] == "--set":
            k, _, v = rest[i + 1].partition("=")
            env[k] = v
            i += 2
        else:
            parse_env_file(rest[i], env)
            i += 1
    return env


def expand(command, env, instance):
    argv = []
    for word in shlex.split(specifiers(command, instance)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""),
                           word))
    return argv


def main():
    mode = sys.argv[1]
    if mode == "mdwe":
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_mdwe, pr_mdwe_refuse_exec_gain = 65, 1
        if libc.prctl(pr_set_mdwe, pr_mdwe_refuse_exec_gain, 0, 0, 0) != 0:
            print(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            sys.exit(3)
        os.execv(sys.argv[2], sys.argv[2:])
    if mode == "argv":
        unit, instance, key, rest = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
        env = environment(unit, instance, rest)
        commands = [v for s, k, v in unit_lines(unit) if s == "Service" and k == key]
        if len(commands) != 1:
            sys.exit(f"{unit}: expected one {key}=, found {len(commands)}")
        command = commands[0].lstrip("-@:+!")
        sys.stdout.write("\0".join(expand(command, env, instance)) + "\0")
    elif mode == "env":
        env = environment(sys.argv[2], sys.argv[3], sys.argv[4:])
        for k, v in env.items():
            print(f"{k}={v}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
