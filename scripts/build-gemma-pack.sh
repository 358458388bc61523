#!/usr/bin/env bash
# Builds the Gemma-3-270M medical pack (examples/packs/medical-gemma3-270m) with the same
# pipeline as the default model's, in the settings its REPORT.md states: a smaller budget than the
# SmolLM2 pack's, because Gemma's 262,144-row output layer runs at every answer token in training
# and every generated token (skills: 100 steps each; stage 2 on five tasks; the
# selection and final tables on each task's first 100 dev items; no user-worded table).
#
#   scripts/build-gemma-pack.sh                         # everything, resumably
#   STAGES="eval report" scripts/build-gemma-pack.sh    # some stages
#
# Any setting can be overridden from the environment (see scripts/build-medical-pack.sh).
# Finished skills, the pack under construction and partial evaluations under WORK can be kept
# (`git add -f`) so a later session on a fresh clone resumes where this one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

export MODEL=${MODEL:-$(scripts/gemma-model.sh)}
export PACK=${PACK:-examples/packs/medical-gemma3-270m}
export WORK=${WORK:-runs/medical-gemma3}
export MODEL_TITLE=${MODEL_TITLE:-"Gemma-3-270M (Q4_K_M)"}
export MIN_STEPS=${MIN_STEPS:-100} MAX_STEPS=${MAX_STEPS:-100} EVAL_EVERY=${EVAL_EVERY:-50}
export DEV_LIMIT=${DEV_LIMIT:-40} PATIENCE=${PATIENCE:-2}
export CANDIDATE_ROUTERS=${CANDIDATE_ROUTERS:-general-none}
export EVAL_LIMIT=${EVAL_LIMIT:-select} SELECT_LIMIT=${SELECT_LIMIT:-100}
export SELECT_CONFIGS=${SELECT_CONFIGS:-base,router:general,router:general-sparsemax,uniform}
export SINGLE_SKILLS=${SINGLE_SKILLS-} EVAL_WHOLE=${EVAL_WHOLE:-0} EVAL_USER=${EVAL_USER:-0}
export TASK_ROUTER_TASKS=${TASK_ROUTER_TASKS-"pubmedqa hoc covidqa healthver meqsum"}
export TASK_ROUTER_ARGS=${TASK_ROUTER_ARGS-"--steps 40 --validation-limit 40"}
exec scripts/build-medical-pack.sh "$@"
