#!/usr/bin/env bash
# The GPU checks, run on a machine with an NVIDIA GPU, with a binary from
# `scripts/build-gpu.sh --with-trainer` (llama.cpp's CUDA backend and the CUDA trainer):
#
#   scripts/gpu-check.sh BIN MODEL.gguf OUTDIR [RECORDS.jsonl]
#
#  1. the CUDA trainer's bench (`train --bench --device cuda:0`): the synthetic config (batch 4 ×
#     384 tokens, loss on every token), with RECORDS a skill's records (answer-only loss), and
#     the synthetic config at batch 32. Each is replayed by PEFT's AdaLoRA on the same GPU right
#     after it (scripts/peft_skill_bench.py, same batches, base in bf16 as ours), where python3 has torch,
#     transformers, peft and gguf;
#  2. decode with every layer on the GPU (`bench --gpu-layers -1`) on 12-skill synthetic packs,
#     all-linear and q,v;
#  3. a routed answer from the repository's medical pack, on the GPU, and with RAW=<the raw
#     datasets' folder> the whole PubMedQA dev split through `eval --gpu-layers -1`.
# The steps run in order of importance (trainer, decode, answer, then the larger batch), each
# under a time limit, so that a run cut short still has the main figures.
#
# Each step's JSON goes to OUTDIR, with the GPU's peak memory (nvidia-smi, sampled every 100 ms)
# and, for the trainer, its model FLOP utilisation (MFU, below). Libraries: the driver's
# libcuda, and cuBLAS, cuRAND, the CUDA runtime and NVRTC (CUDA 13), found where PyTorch's
# wheels or a toolkit put them.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$1 MODEL=$2 OUT=$3 RECORDS=${4:-}
mkdir -p "$OUT"
say() { printf '[gpu-check] %s\n' "$*" >&2; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"
libdirs=$(find /opt /usr/local /usr/lib /usr/lib64 -xdev \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' \
  -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcuda.so.1' \) 2>/dev/null |
  xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
say "libraries from: $libdirs"
if ldd "$BIN" | grep 'not found'; then say "missing libraries"; exit 1; fi

# Runs a command while sampling the GPU's used memory; writes NAME.json (stdout) and NAME.log,
# and prints the peak memory above the idle level into NAME.mem.
measured() {
  local name=$1; shift
  local idle; idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/$name.memtrace" &
  local sampler=$!
  local started=$SECONDS
  timeout 150 "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  local peak; peak=$(sort -n "$OUT/$name.memtrace" | tail -1)
  echo "$(( ${peak:-0} - idle ))" >"$OUT/$name.mem"
  say "$name: rc=$rc, $((SECONDS - started)) s, GPU memory peak +$(cat "$OUT/$name.mem") MiB"
  tail -3 "$OUT/$name.log" >&2
  cat "$OUT/$name.json" >&2
  return $rc
}

peft_ok=0
python3 -c 'import torch, transformers, peft, gguf' 2>/dev/null && peft_ok=1
train_pair() { # NAME ARGS...: ours, then PEFT on the same batches
  local name=$1; shift
  measured "$name" "$BIN" train --bench --device cuda:0 --base "$MODEL" --json \
    --batches-out "$OUT/$name.batches.json" "$@"
  if [[ $peft_ok == 1 ]]; then
    measured "$name-peft" python3 scripts/peft_skill_bench.py "$MODEL" "$OUT/$name.batches.json" 16 cuda bfloat16
  fi
}
# ONLY=train: the trainer comparisons alone, ROUNDS times (NAME-rN), for their spread.
if [[ ${ONLY:-} == train ]]; then
  for round in $(seq 1 "${ROUNDS:-2}"); do
    train_pair "train-synthetic-r$round"
    [[ -n $RECORDS ]] && train_pair "train-records-r$round" --data "$RECORDS" --limit 200
    train_pair "train-synthetic-b32-r$round" --batch 32
  done
fi
# In order of importance, so that a run cut short still reports the main figures.
[[ -z ${ONLY:-} ]] && train_pair train-synthetic
[[ -z ${ONLY:-} && -n $RECORDS ]] && train_pair train-records --data "$RECORDS" --limit 200

# Decode on the GPU, on a synthetic 12-skill pack (all-linear or q,v).
decode() {
  local targets=$1
  "$BIN" pack synth "$OUT/synth-$targets" --base "$MODEL" --skills 12 --rank 8 --targets "$targets" >"$OUT/synth-$targets.log" 2>&1 || say "pack synth failed: $(tail -2 "$OUT/synth-$targets.log")"
  measured "decode-$targets" "$BIN" bench --pack "$OUT/synth-$targets" --model "$MODEL" --gpu-layers -1 \
    --threads 8 --reps 5 --json
  rm -rf "$OUT/synth-$targets"
}

[[ -z ${ONLY:-} ]] && decode all

# A routed medical answer with every layer on the GPU.
[[ -z ${ONLY:-} ]] && measured routed-answer "$BIN" run --model "$MODEL" --pack examples/packs/medical-smollm2 --gpu-layers -1 \
  --max-tokens 64 --json "What is the first-line treatment for uncomplicated hypertension in adults?"
[[ -z ${ONLY:-} ]] && decode qv
# The evaluation harness on the GPU (RAW: the raw datasets' folder, with pubmedqa/).
if [[ -z ${ONLY:-} && -n ${RAW:-} && -d $RAW/pubmedqa ]]; then
  measured eval-pubmedqa "$BIN" eval --task pubmedqa --raw "$RAW" --model "$MODEL" \
    --pack examples/packs/medical-smollm2 --configs base,router:general --limit 0 --gpu-layers -1 \
    --threads 8 --out "$OUT/eval-pubmedqa" --json
fi
[[ -z ${ONLY:-} ]] && train_pair train-synthetic-b32 --batch 32
rm -f "$OUT"/*.batches.json "$OUT"/*.memtrace

# MFU (synthetic runs, where every position carries loss): model FLOPs per trained token over
# the GPU's peak. With the base frozen, a token costs
# the forward (2 N) and the input gradients (2 N) of the N weights it passes, plus causal
# attention (forward 4·d·T/2 per layer, backward twice that). Peak: H100/H200 SXM dense bf16
# tensor cores, 989 TFLOP/s (the CUDA trainer keeps the frozen weights in bf16).
python3 - "$OUT" "$MODEL" <<'EOF' | tee "$OUT/mfu.txt"
import json, os, sys
out, model = sys.argv[1], sys.argv[2]
from gguf import GGUFReader
r = GGUFReader(model)
f = {k: r.fields[k] for k in r.fields}
def val(key):
    x = f[key]; return x.parts[x.data[0]][0]
arch = bytes(f["general.architecture"].parts[-1]).decode()
layers, d = int(val(f"{arch}.block_count")), int(val(f"{arch}.embedding_length"))
n_linear = sum(int(t.n_elements) for t in r.tensors if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2)
vocab = next(int(t.shape[1]) for t in r.tensors if t.name == "token_embd.weight")
head = vocab * d
for name in sorted(os.listdir(out)):
    if not name.startswith("train-") or not name.endswith(".json") or name.endswith("-peft.json"):
        continue
    try:
        ours = json.load(open(os.path.join(out, name)))
    except Exception:
        continue
    T = ours["seq_len"]
    flops = 4 * (n_linear + head) + 6 * layers * d * T
    peft = None
    p = os.path.join(out, name.replace(".json", "-peft.json"))
    if os.path.exists(p):
        try:
            peft = json.load(open(p))["peft_tokens_per_s"]
        except Exception:
            pass
    tps = ours["tokens_per_s"]
    line = f"{name[:-5]}: {tps:.0f} tokens/s"
    if ours.get("data") is None:  # full-length sequences, loss (and head) on every token
        line += (f", {flops * tps / 1e12:.2f} TFLOP/s model FLOPs ({flops / 1e6:.0f} MFLOP/token), "
                 f"MFU {100 * flops * tps / 989e12:.2f} % of the bf16 peak")
    if peft:
        line += f"; PEFT {peft:.0f} tokens/s, ours/PEFT {tps / peft:.2f}x"
    print(line)
EOF
say done
