#!/usr/bin/env bash
# The main job: install what is missing, build, get the default model, and generate text through
# a 3-stage pipeline of worker processes on this machine (the layers split across them).
# Usage: deploy/quickstart.sh [PROMPT]   (MODEL=gpt2 STAGES=4 deploy/quickstart.sh to vary)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${MODEL:-distilgpt2}
stages=${STAGES:-3}
prompt=${1:-"The Raspberry Pi is a small computer that"}
build=${DGPT_BUILD_DIR:-$root/build}

bash "$root/deploy/install-deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target dgpt

model_dir=$root/models/$model
if ! bash "$root/weights/download.sh" --out "$model_dir" "$model"; then
  # Offline: a random-weight model of the same shape shows the machinery working.
  model_dir=$root/models/random-$model
  tokenizer_args=()
  [[ -f $root/../shared/gpt2-tokenizer/vocab.json ]] &&
    tokenizer_args=(--tokenizer-dir "$root/../shared/gpt2-tokenizer")
  echo "quickstart: could not download $model; using a random-weight $model-shaped model" \
       "instead (its output is meaningless text)" >&2
  if [[ ! -f $model_dir/model.safetensors ]]; then
    /usr/bin/python3 "$root/weights/make_random_model.py" --preset "$model" --seed 1 \
      --out "$model_dir" "${tokenizer_args[@]}"
  fi
fi

echo "quickstart: generating with $model_dir through $stages local worker processes" >&2
"$build/tools/dgpt" generate --model "$model_dir" --local-workers "$stages" \
  --prompt "$prompt" --max-tokens 48 --seed 1
