#!/usr/bin/env bash
# The main job, end to end on the default model: set up (model, build), then answer a medical
# question with the committed SA-MDKIF medical pack — the pack's router weights its 12 skills
# for this prompt and llama.cpp applies the weighted skills (--show-weights prints them).
#
#   scripts/demo.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PACK=examples/packs/medical-smollm2
PROMPT=${1:-"What are the symptoms of iron deficiency anemia?"}
echo "> $PROMPT"
target/release/skillpack run --pack "$PACK" --show-weights --temp 0 -n 160 "$PROMPT"
