#!/usr/bin/env bash
# Downloads a Hugging Face GPT-2 checkpoint (config.json, model.safetensors, vocab.json,
# merges.txt) into models/NAME/ (or --out DIR).
#
#   weights/download.sh [--out DIR] [NAME]     NAME: distilgpt2 (default), gpt2, gpt2-medium,
#                                                     gpt2-large, gpt2-xl
#
# Idempotent: files already there are checked and kept. Downloads go to FILE.part (resumed on
# the next run) and are renamed only once complete and checked. HF_ENDPOINT overrides
# https://huggingface.co (a mirror). Exit status: 0 ok, 1 download/check failed, 2 bad usage.
set -euo pipefail

readonly FILES=(config.json vocab.json merges.txt model.safetensors)
readonly ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}"
readonly PYTHON=/usr/bin/python3
readonly CONNECT_TIMEOUT_S=10
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

usage() {
  sed -n '2,7s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {  # die STATUS MESSAGE
  echo "error: $2" >&2
  exit "$1"
}

# Accepted byte range of model.safetensors, "MIN MAX". MIN is the float32 parameters alone
# (a re-export may drop the attn.bias buffers); MAX adds the hub files' h.{i}.attn.bias
# [1,1,1024,1024] F32 buffers and 1 MiB for the JSON header.
safetensors_size_range() {
  case "$1" in
    distilgpt2) echo "327650304 353864704" ;;     # 82M params, ~353 MB on the hub
    gpt2) echo "497759232 549139456" ;;           # 124M, ~548 MB
    gpt2-medium) echo "1419292672 1521004544" ;;  # 355M, ~1.52 GB
    gpt2-large) echo "3096120320 3248163840" ;;   # 774M, ~3.25 GB
    gpt2-xl) echo "6230444800 6432819968" ;;      # 1.5B, ~6.43 GB
    *) return 1 ;;
  esac
}

# Checks a downloaded file; prints the reason and fails if it is not usable.
check_file() {  # check_file NAME FILE PATH
  local name="$1" file="$2" path="$3"
  case "${file}" in
    *.json)
      "${PYTHON}" -c 'import json, sys; json.load(open(sys.argv[1], encoding="utf-8"))' "${path}" \
        2>/dev/null || { echo "not valid JSON"; return 1; }
      ;;
    merges.txt)
      [[ -s "${path}" ]] || { echo "empty"; return 1; }
      ;;
    model.safetensors)
      local range min max size
      range="$(safetensors_size_range "${name}")"
      read -r min max <<<"${range}"
      size="$(stat -c %s "${path}")"
      if ((size < min || size > max)); then
        echo "${size} bytes, expected ${min}..${max} for ${name}"
        return 1
      fi
      check_safetensors_header "${path}" || return 1
      ;;
    *) ;;
  esac
}

# The header must parse and its tensors must end exactly at the end of the file.
check_safetensors_header() {  # check_safetensors_header PATH
  "${PYTHON}" - "$1" <<'EOF'
import json, os, sys
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > 100_000_000:
            raise ValueError(f"header length {n} is implausible")
        header = json.loads(f.read(n))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if not any(k.endswith("wte.weight") for k in header):
        raise ValueError("no wte.weight tensor")
    if 8 + n + max(ends) != os.path.getsize(path):
        raise ValueError("tensor data does not end at the end of the file")
except Exception as e:  # one line for the shell to print
    print(f"bad safetensors header: {e}")
    sys.exit(1)
EOF
}

# Fails fast (no retries, short connect timeout) with one clear line when offline.
check_reachable() {  # check_reachable NAME
  local url="${ENDPOINT}/$1/resolve/main/config.json" message status=0
  message="$(curl -sS -f -L -o /dev/null --connect-timeout "${CONNECT_TIMEOUT_S}" \
    --max-time 30 "${url}" 2>&1)" || status=$?
  ((status == 0)) && return
  message="$(printf '%s' "${message}" | tail -n 1)"
  if ((status == 22)); then  # reached, but an HTTP error (404, 401, ...)
    die 1 "${url}: ${message#curl: }"
  fi
  die 1 "cannot reach ${ENDPOINT#*://}: ${message#curl: } — copy the model folder by hand or use weights/make_random_model.py"
}

# Downloads URL to PATH.part (resuming a previous attempt), then renames it to PATH.
fetch() {  # fetch URL PATH
  local url="$1" path="$2" progress=(-sS)
  if [[ -t 2 ]]; then progress=(--progress-bar); fi
  local curl_args=(-f -L --retry 5 --retry-delay 2 --connect-timeout "${CONNECT_TIMEOUT_S}"
                   "${progress[@]}" -o "${path}.part" "${url}")
  if ! curl -C - "${curl_args[@]}"; then
    # A server that ignores ranges, or a .part from another version of the file: start over.
    [[ -e "${path}.part" ]] || return 1
    echo "resuming ${path##*/} failed; downloading it from the start" >&2
    rm -f -- "${path}.part"
    curl "${curl_args[@]}" || return 1
  fi
  mv -f -- "${path}.part" "${path}"
}

main() {
  local name="" out=""
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --out) [[ $# -ge 2 ]] || die 2 "--out needs a folder"; out="$2"; shift 2 ;;
      -*) die 2 "unknown option $1 (see --help)" ;;
      *) [[ -z "${name}" ]] || die 2 "one model name only (got ${name} and $1)"; name="$1"; shift ;;
    esac
  done
  name="${name:-distilgpt2}"
  safetensors_size_range "${name}" >/dev/null \
    || die 2 "unknown model '${name}' (known: distilgpt2 gpt2 gpt2-medium gpt2-large gpt2-xl)"
  out="${out:-${SCRIPT_DIR}/../models/${name}}"

  local file path reason missing=()
  for file in "${FILES[@]}"; do
    path="${out}/${file}"
    [[ -e "${path}" ]] || { missing+=("${file}"); continue; }
    reason="$(check_file "${name}" "${file}" "${path}")" \
      || die 1 "${path} is there but unusable (${reason}); delete it to download it again"
    echo "have ${path}"
  done

  if ((${#missing[@]})); then
    check_reachable "${name}"
    mkdir -p -- "${out}"
    for file in "${missing[@]}"; do
      path="${out}/${file}"
      echo "downloading ${ENDPOINT}/${name}/resolve/main/${file}"
      fetch "${ENDPOINT}/${name}/resolve/main/${file}" "${path}" \
        || die 1 "downloading ${file} failed (run again to resume)"
      if ! reason="$(check_file "${name}" "${file}" "${path}")"; then
        mv -f -- "${path}" "${path}.bad"
        die 1 "downloaded ${file} is unusable (${reason}); kept as ${path}.bad"
      fi
    done
  fi
  echo "ok: ${name} in ${out}"
}

main "$@"
