"""PEFT's side of the real-data training-speed comparison: replays the token batches that
`skillpack train --bench --data RECORDS --batches-out BATCHES.json` trained on (same order, each
padded to its longest example with token 0, loss on the answer tokens only) with PEFT's AdaLoRA
on the same base model, dequantized from the same GGUF to f32, AdamW, and prints one JSON line:
tokens/s over the timed steps (all positions of the padded batches, as skillpack counts them).

Run with the PEFT environment of ../shared/tools/peft-bench.sh (it builds it on first use):
  ~/.cache/skillpack-peft-venv/bin/python scripts/peft_skill_bench.py MODEL.gguf BATCHES.json [THREADS [DEVICE [DTYPE]]]

DEVICE is `cpu` (default) or `cuda`: on a GPU, each timed step ends with a synchronisation, as
skillpack's steps end when their results are on the host, and the peak GPU memory is reported.
DTYPE is the base model's type: float32 (default; skillpack's CPU trainer) or bfloat16
(skillpack's CUDA trainer keeps the frozen weights in bf16).
"""
import json
import os
import sys
import time

import peft
import torch
from peft import AdaLoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_path, batches_path = sys.argv[1], sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[sys.argv[5] if len(sys.argv) > 5 else "float32"]
spec = json.load(open(batches_path))
torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(
    os.path.dirname(os.path.abspath(model_path)),
    gguf_file=os.path.basename(model_path),
    torch_dtype=dtype,
)
batches = spec["batches"]
warmup = spec.get("warmup_steps", 1)
if spec["method"] != "adalora":
    sys.exit(f"{batches_path}: only adalora batches are replayed, not {spec['method']}")
if spec.get("accumulate", 1) != 1:
    sys.exit(f"{batches_path}: replays one batch per optimizer step; bench with --accumulate 1")
config = AdaLoraConfig(
    init_r=spec["r"],
    target_r=spec["target_r"],
    lora_alpha=spec["alpha"],
    target_modules=spec["targets"],
    tinit=1,
    tfinal=1,
    deltaT=1,
    total_step=len(batches) + 10,
    lora_dropout=0.0,
)
peft_model = get_peft_model(model, config).to(device)
peft_model.train()
optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=spec["lr"])
times, tokens, targets = [], 0, 0
for step, batch in enumerate(batches):
    width = max(len(e["ids"]) for e in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example["ids"])
        ids[row, :n] = torch.tensor(example["ids"])
        mask = torch.tensor(example["targets"], dtype=torch.bool)
        labels[row, :n] = torch.where(mask, ids[row, :n], torch.tensor(-100))
    ids, labels = ids.to(device), labels.to(device)
    if device != "cpu":
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = peft_model(input_ids=ids, labels=labels)
    out.loss.backward()
    optimizer.step()
    peft_model.base_model.update_and_allocate(step)
    optimizer.zero_grad()
    if device != "cpu":
        torch.cuda.synchronize()
    if step >= warmup:
        times.append(time.perf_counter() - started)
        tokens += len(batch) * width
        targets += int((labels[:, 1:] != -100).sum())
print(json.dumps({
    "peft_tokens_per_s": tokens / sum(times),
    "seconds_per_step": sum(times) / len(times),
    "target_tokens_per_step": targets / len(times),
    "timed_steps": len(times),
    "threads": threads,
    "device": device,
    "dtype": str(dtype).removeprefix("torch."),
    "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None,
    "torch": torch.__version__,
    "peft": peft.__version__,
}))
