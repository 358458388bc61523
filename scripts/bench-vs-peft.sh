#!/usr/bin/env bash
# Training speed, ours against PEFT, measured side by side: `skillpack train --bench` and PEFT's
# side (../shared/tools/peft-bench.sh: AdaLoRA init_r 12 -> 8 on all 7 linear modules of the
# default model dequantized to f32, batch 4 x 256 tokens, loss on every token, AdamW) back to
# back, ROUNDS times, on the same machine and threads. Ours runs once per precision in MATMULS
# (default "bf16 f32": `--matmul bf16` on AMX CPUs, and f32 as PEFT computes); where the CPU has
# no AMX, bf16 is skipped. Prints each round's tokens/s and ratios, and one JSON line per round
# on stdout.
#
#   scripts/bench-vs-peft.sh [ROUNDS=3]
#   DATA=runs/medical/data SKILLS="ner qa" scripts/bench-vs-peft.sh 1
#
# With SKILLS, each skill is measured on its own records instead (DATA/SKILL/train.jsonl, the
# skills' settings of scripts/build-medical-pack.sh: AdaLoRA r 12 -> 8 on q_proj,v_proj, batch 4,
# up to 384 tokens, loss on the answers only): ours trains on the trainer's first batches and
# writes them out; PEFT replays exactly those batches (scripts/peft_skill_bench.py).
#
# Environment: THREADS (2), MODEL (the default model), PEFT_BENCH (the PEFT script),
# BIN (a skillpack binary; default target/release/skillpack), MATMULS.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
THREADS=${THREADS:-2}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PEFT_BENCH=${PEFT_BENCH:-../shared/tools/peft-bench.sh}
BIN=${BIN:-target/release/skillpack}
MATMULS=${MATMULS:-bf16 f32}
SKILLS=${SKILLS:-}
DATA=${DATA:-runs/medical/data}
PEFT_PYTHON=${PEFT_VENV:-$HOME/.cache/skillpack-peft-venv}/bin/python
[[ -x "$BIN" ]] || { echo "build first (cargo build --release)" >&2; exit 1; }
[[ -x "$PEFT_BENCH" ]] || { echo "$PEFT_BENCH not found" >&2; exit 1; }

# Our side: tokens/s of one `train --bench` (extra arguments appended), or nothing when that
# precision does not run here.
ours_tokens_per_s() { # MATMUL ARGS...
  local matmul=$1 json
  shift
  json=$(RAYON_NUM_THREADS=$THREADS "$BIN" train --bench --base "$MODEL" --method adalora --r 12 \
    --target-r 8 --alpha 32 --batch 4 --matmul "$matmul" --json "$@" 2>/dev/null) || return 0
  python3 -c "import json,sys;print(json.loads(sys.argv[1])['tokens_per_s'])" "$json"
}

round_line() { # ROUND NAME PEFT_TOKENS_PER_S (ours in the array `ours`)
  local line="{\"round\":$1,\"work\":\"$2\",\"threads\":$THREADS,\"peft_tokens_per_s\":$3"
  local text="round $1, $2: PEFT $3 tokens/s" matmul ratio
  for matmul in $MATMULS; do
    [[ -n "${ours[$matmul]:-}" ]] || { text="$text; --matmul $matmul does not run here"; continue; }
    ratio=$(python3 -c "print(f'{${ours[$matmul]} / $3:.3f}')")
    text="$text; skillpack --matmul $matmul ${ours[$matmul]} tokens/s = $ratio x PEFT"
    line="$line,\"skillpack_${matmul}_tokens_per_s\":${ours[$matmul]},\"ratio_${matmul}\":$ratio"
  done
  echo "$text" >&2
  echo "$line}"
}

# What scripts/peft_skill_bench.py imports (the shared tool builds exactly that environment).
if [[ -n "$SKILLS" ]] && ! "$PEFT_PYTHON" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
  "$PEFT_BENCH" "$MODEL" "$THREADS" 1 >/dev/null # builds the PEFT environment
fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
declare -A ours
for round in $(seq 1 "$ROUNDS"); do
  if [[ -z "$SKILLS" ]]; then
    ours=()
    for matmul in $MATMULS; do
      ours[$matmul]=$(ours_tokens_per_s "$matmul" --max-len 256 \
        --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)
    done
    peft=$("$PEFT_BENCH" "$MODEL" "$THREADS" 6 2>/dev/null | sed -n 's/^peft adalora: \([0-9.]*\) tokens\/s.*/\1/p')
    round_line "$round" synthetic "$peft"
    continue
  fi
  for skill in $SKILLS; do
    ours=()
    for matmul in $MATMULS; do
      ours[$matmul]=$(ours_tokens_per_s "$matmul" --max-len 384 --targets q_proj,v_proj --lr 2e-3 \
        --seed 13 --data "$DATA/$skill/train.jsonl" --batches-out "$SCRATCH/$skill.json")
    done
    peft=$("$PEFT_PYTHON" scripts/peft_skill_bench.py "$MODEL" "$SCRATCH/$skill.json" "$THREADS" 2>/dev/null |
      python3 -c "import json,sys;print(json.loads(sys.stdin.read())['peft_tokens_per_s'])")
    round_line "$round" "skill:$skill" "$peft"
  done
done
