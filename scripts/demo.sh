#!/usr/bin/env bash
# The main job, end to end on the default model: set up, convert a PEFT adapter to GGUF,
# and answer a medical question with the adapter applied by llama.cpp.
# (Until the medical skill pack lands, the adapter is the PEFT LoRA fixture.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
FIXTURES=${SKILLPACK_FIXTURES:-../shared/fixtures}
BIN=target/release/skillpack
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
$BIN convert "$FIXTURES/smollm2/peft-adalora" --base "$MODEL" -o models/demo-adalora.gguf
$BIN inspect models/demo-adalora.gguf --base "$MODEL"
PROMPT=${1:-"What are the common symptoms of type 2 diabetes?"}
echo; echo "> $PROMPT"
$BIN run --model "$MODEL" --lora models/demo-adalora.gguf:1.0 --temp 0 -n 160 "$PROMPT"
