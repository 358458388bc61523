#!/usr/bin/env bash
# Builds the SA-MDKIF medical pack for the default model, end to end and resumably:
#   data build -> 12 skills (AdaLoRA) -> pack -> routers -> eval --all -> router bench -> report
#   -> publish (the finished pack replaces PACK).
# Every stage skips work whose output already exists, so after an interruption the same
# command continues where it stopped (skill training resumes from its last checkpoint).
#
#   scripts/build-medical-pack.sh                 # everything
#   STAGES="data skills" scripts/build-medical-pack.sh
#
# Environment: RAW (raw data, default ../shared/data/raw), WORK (intermediate outputs, default
# runs/medical — not committed), PACK (default examples/packs/medical-smollm2), MODEL (the base
# GGUF, default the setup's SmolLM2; e.g. MODEL=$(scripts/gemma-model.sh) PACK=examples/packs/
# medical-gemma3-270m WORK=runs/medical-gemma3 for the Gemma pack), THREADS, SEED,
# BIN (a skillpack binary to use instead of building one, e.g. a copy, so rebuilding the
# workspace meanwhile does not swap the binary under a long run).
# Skills train to convergence: the step budget is EPOCHS passes over the skill's records within
# [MIN_STEPS, MAX_STEPS]; the loss on DEV_LIMIT of the skill's dev records is evaluated every
# EVAL_EVERY steps, the best step is exported, and training stops after PATIENCE evaluations
# without improvement.
set -euo pipefail
cd "$(dirname "$0")/.."

# The settings given to this run (beyond RAW, SEED, EPOCHS, MAX_STEPS, TARGETS, which the report
# always states), so the report's command is the one that made the pack.
SETTINGS=""
for var in MODEL PACK WORK MODEL_TITLE MIN_STEPS EVAL_EVERY PATIENCE DEV_LIMIT SKILLS \
  ROUTING_PROMPTS PROMPT_REPEATS CANDIDATE_ROUTERS EVAL_LIMIT SCORING SELECT_CONFIGS SELECT_LIMIT \
  SINGLE_SKILLS EVAL_WHOLE TASK_ROUTER_ARGS TASK_ROUTER_TASKS EVAL_USER; do
  [[ -n "${!var+set}" ]] && SETTINGS+="$var=$(printf '%q' "${!var}") "
done

RAW=${RAW:-../shared/data/raw}
WORK=${WORK:-runs/medical}
PACK=${PACK:-examples/packs/medical-smollm2}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-1}
MIN_STEPS=${MIN_STEPS:-150}
MAX_STEPS=${MAX_STEPS:-400}
EVAL_EVERY=${EVAL_EVERY:-50}
PATIENCE=${PATIENCE:-3}
DEV_LIMIT=${DEV_LIMIT:-100}
SEED=${SEED:-13}
STAGES=${STAGES:-"data skills pack routers eval bench report publish"}
SKILLS=${SKILLS:-"qa mcqa mc mldc mrc nli ts ner re ea es er"}
SEEN="pubmedqa medqa medmcqa bc5cdr chemprot hoc"
UNSEEN="healthver covidqa meqsum"
# Skills adapt q_proj and v_proj: with the pack's 12 skills routed top-3, fused q,v adapters
# decode at 0.94-1.03x the base model's speed, all seven projections at 0.78-0.81x
# (`skillpack bench`, README); rank 12 -> 8 (AdaLoRA's budget) keeps each skill ~0.3 MB.
TARGETS=${TARGETS:-q_proj,v_proj}
# Routers: labelled user messages added to the skill records, and their weight (5 was chosen on
# examples/routing/freeform-dev.jsonl: 1 -> 123/144, 5 -> 125/144 on the first 441 prompts).
ROUTING_PROMPTS=${ROUTING_PROMPTS:-examples/routing/train.jsonl}
PROMPT_REPEATS=${PROMPT_REPEATS:-5}
# Routers trained only to compare with the default (other features): general-embedding (mean
# token embeddings), prototype and general-hidden (mean hidden states: a forward pass over every
# record, the costliest); and general-none, the default's training plus the off-topic requests of
# examples/routing/offtopic-train.jsonl labelled `none` (a "no skill" output: requests outside
# medicine get the base model). A longer build (a bigger model) may keep fewer.
# `none` trains none of them.
CANDIDATE_ROUTERS=${CANDIDATE_ROUTERS:-"general-embedding prototype general-hidden general-none"}
# Items per task of the final table: 0 = whole dev splits; `select` = the selection's first
# 100-200 items (then the final table costs only the configurations the selection did not run,
# and base and the default routing are evaluated on the whole dev splits after it, in eval-whole:
# about 75 min per configuration on 2 cores, against 5-6 configurations in the final table).
EVAL_LIMIT=${EVAL_LIMIT:-0}
# Option scoring per task, for base and packs alike: MedQA/MedMCQA average each option text
# over its rotations among the letters (plain log-likelihood picked A for 95 % of MedMCQA items
# under `general`); content-free calibration was tried on PubMedQA/HealthVer and left out (it
# helped the base model, not the pack: runs/medical/eval-calibration).
SCORING=${SCORING:-medqa=permutation,medmcqa=permutation}
# What the evaluation runs, for a slower model to trim (each choice is stated in the report):
# the selection's configurations (choose-default picks among the committing modes present),
# its items per task (empty: each task's 100-200; a number caps every task), the single skills
# of the final table, and whether base and the default also run on the whole dev splits.
SELECT_CONFIGS=${SELECT_CONFIGS:-base,router:general,router:general-top1,router:general-sparsemax,uniform}
SELECT_LIMIT=${SELECT_LIMIT:-}
SINGLE_SKILLS=${SINGLE_SKILLS-"mrc mcqa qa ner re er mldc nli ts"}
EVAL_WHOLE=${EVAL_WHOLE:-1}
# Extra arguments of every stage-2 task router's training (`router train --method end-to-end`),
# for a slower model to trim, e.g. "--steps 40 --validation-limit 40" (stated in the report).
TASK_ROUTER_ARGS=${TASK_ROUTER_ARGS:-}
# The tasks that get a stage-2 router (unset: all nine; fewer, or none, where CPU time is short).
TASK_ROUTER_TASKS=${TASK_ROUTER_TASKS-"$SEEN $UNSEEN"}
# 1: also evaluate the selection items worded as users would (base and the default routing).
EVAL_USER=${EVAL_USER:-1}

# Every command takes its model from SKILLPACK_MODEL when none is given.
if [[ -n "${MODEL:-}" ]]; then
  export SKILLPACK_MODEL=$MODEL
fi
PACK_NAME=${PACK_NAME:-$(basename "$PACK")}
# Every stage works on a copy under WORK; the last stage, publish, replaces PACK with it, so the
# pack a user has keeps working (and is not half-replaced) while a rebuild runs.
BUILD="$WORK/pack"
if [[ -z "${BIN:-}" ]]; then
  scripts/setup.sh >&2
  BIN=target/release/skillpack
fi
mkdir -p "$WORK"
TIMES="$WORK/stage-times.tsv"
stage() { [[ " $STAGES " == *" $1 "* ]]; }
timed() { # NAME COMMAND...
  local name=$1 start=$SECONDS
  shift
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - start)) >>"$TIMES"
}

if stage data; then
  echo "== data" >&2
  timed data "$BIN" data build --raw "$RAW" --out "$WORK/data" --seed "$SEED" >&2
fi

if stage skills; then
  for s in $SKILLS; do
    out="$WORK/skills/$s"
    if [[ -f "$out/adapter.gguf" ]]; then continue; fi
    echo "== skill $s" >&2
    timed "skill-$s" "$BIN" train --data "$WORK/data/$s/train.jsonl" --out "$out" --resume \
      --dev "$WORK/data/$s/dev.jsonl" --dev-limit "$DEV_LIMIT" --eval-every "$EVAL_EVERY" \
      --patience "$PATIENCE" --epochs "$EPOCHS" --min-steps "$MIN_STEPS" --max-steps "$MAX_STEPS" \
      --method adalora --targets "$TARGETS" --r 12 --target-r 8 --alpha 32 \
      --batch 4 --max-len 384 --lr 2e-3 --seed "$SEED" --checkpoint-every 25 >&2
  done
fi

if stage pack; then
  echo "== pack" >&2
  if [[ ! -f "$BUILD/pack.toml" ]]; then
    "$BIN" pack new "$BUILD" --name "$PACK_NAME" \
      --description "SA-MDKIF medical skills for ${MODEL_TITLE:-SmolLM2-135M-Instruct (Q4_1)}" >&2
  fi
  for s in $SKILLS; do
    title=$(python3 -c "import json;print(json.load(open('$WORK/data/$s/card.json'))['title'])")
    desc=$(python3 -c "import json;print(json.load(open('$WORK/data/$s/card.json'))['description'])")
    "$BIN" pack add "$BUILD" "$WORK/skills/$s/adapter.gguf" --id "$s" --title "$title" --description "$desc" \
      --outtype q8_0 >&2
  done
  "$BIN" pack check "$BUILD" >&2
fi

has_router() { "$BIN" router list --pack "$BUILD" --json | python3 -c "import json,sys;sys.exit(0 if any(r['name']=='$1' for r in json.load(sys.stdin)['routers']) else 1)"; }

if stage routers; then
  echo "== routers" >&2
  # Cheapest first, so an interrupted run keeps what it finished. The default, `general`, reads
  # no hidden state (segment-lexical: the embeddings of the request's first and last lines and
  # their hashed words, so routing adds next to nothing to the time to first token) and is
  # trained on the skills' records, half of them in users' own wordings, and on the 732 whole
  # user messages of examples/routing/train.jsonl (each counted PROMPT_REPEATS times; the free-form
  # sets used to tune and to test routing are kept out).
  has_router general || timed router-general "$BIN" router train --pack "$BUILD" --method supervised \
    --features segment-lexical --data "$WORK/data" --prompts "$ROUTING_PROMPTS" \
    --prompt-repeats "$PROMPT_REPEATS" --name general --default --threads "$THREADS" \
    --seed "$SEED" >&2
  candidate() { [[ " $CANDIDATE_ROUTERS " == *" $1 "* ]]; }
  candidate general-embedding && { has_router general-embedding || timed router-general-embedding "$BIN" router train --pack "$BUILD" \
    --method supervised --features mean-embedding --data "$WORK/data" --prompts "$ROUTING_PROMPTS" \
    --prompt-repeats "$PROMPT_REPEATS" --name general-embedding --threads "$THREADS" \
    --seed "$SEED" >&2; }
  candidate prototype && { has_router prototype || timed router-prototype "$BIN" router train \
    --pack "$BUILD" --method prototype --data "$WORK/data" --name prototype --threads "$THREADS" >&2; }
  # The former default for comparison: mean-hidden features (one extra forward pass).
  candidate general-hidden && { has_router general-hidden || timed router-general-hidden "$BIN" \
    router train --pack "$BUILD" --method supervised --data "$WORK/data" --name general-hidden \
    --soft-labels 10 --threads "$THREADS" --seed "$SEED" >&2; }
  if candidate general-none && ! has_router general-none; then
    cat "$ROUTING_PROMPTS" examples/routing/offtopic-train.jsonl >"$WORK/routing-prompts-with-none.jsonl"
    timed router-general-none "$BIN" router train --pack "$BUILD" --method supervised \
      --features segment-lexical --data "$WORK/data" --prompts "$WORK/routing-prompts-with-none.jsonl" \
      --prompt-repeats "$PROMPT_REPEATS" --name general-none --threads "$THREADS" --seed "$SEED" >&2
  fi
  # Temperature scaling on the skills' own dev records (each skill was trained at scale 1; an
  # uncalibrated softmax dilutes it). Idempotent: the fit starts from the router's weights.
  for r in general general-hidden general-embedding general-none; do
    has_router "$r" || continue
    [[ -s "$WORK/calibrate-$r.json" ]] || timed "calibrate-$r" "$BIN" router calibrate --pack "$BUILD" \
      --router "$r" --data "$WORK/data" --threads "$THREADS" --json >"$WORK/calibrate-$r.json"
  done
  # Committing modes of the default router, compared on dev by the eval stage.
  has_router general-top1 || "$BIN" router commit --pack "$BUILD" --router general --mode top1:0.5 \
    --name general-top1 >&2
  has_router general-sparsemax || "$BIN" router commit --pack "$BUILD" --router general \
    --mode sparsemax --name general-sparsemax >&2
  if has_router general-none && ! has_router general-none-sparsemax; then
    "$BIN" router commit --pack "$BUILD" --router general-none --mode sparsemax \
      --name general-none-sparsemax >&2
  fi
  # Stage 2: warm-started from `general`, selected by each task's own metric on held-out train
  # items among the warm start, the base model and the trained heads.
  for t in $TASK_ROUTER_TASKS; do
    has_router "task-$t" || timed "router-task-$t" "$BIN" router train --pack "$BUILD" --method end-to-end \
      --features segment-lexical --task "$t" --raw "$RAW" --name "task-$t" --threads "$THREADS" \
      --seed "$SEED" $TASK_ROUTER_ARGS >&2
  done
fi

if stage eval; then
  echo "== eval" >&2
  # Evaluation is most of the build's CPU time (about 75 min per configuration over the nine whole
  # dev splits on 2 cores), so it runs in parts, each resumable item by item (--resume), the
  # critical path first. First the choice of the committing mode of `general`, on each task's
  # first `default_limit` dev items (100-200; every configuration on the same items).
  select=$SELECT_CONFIGS
  select_limit=()
  [[ -n $SELECT_LIMIT ]] && select_limit=(--limit "$SELECT_LIMIT")
  timed eval-select "$BIN" eval --all --pack "$BUILD" --raw "$RAW" --configs "$select" \
    "${select_limit[@]}" --task-calibration "$SCORING" --threads "$THREADS" --out "$WORK/eval-select" --resume >&2
  # The committing mode with the best selection score (mean over the two groups of the group
  # mean ÷ base's) becomes the pack's default router.
  read -r best mode < <(python3 scripts/medical-report.py choose-default "$WORK")
  echo "default router: $best ($mode), by dev score" >&2
  "$BIN" router commit --pack "$BUILD" --router "$best" --mode "$mode" --default >&2
  # Then the final table on the whole dev split of every task (EVAL_LIMIT=0): base, the default
  # routing, `general` (what every task router must match), each task router on its own task,
  # the single skills on the tasks they fit (mc, ea and es fit none of the nine), and uniform
  # weights. The selection's predictions stand for the first items (--reuse), and a task router
  # that fell back to `general` or to the base model shares their predictions (same weights).
  configs="base,router:general"
  [[ $best == general ]] || configs="$configs,router:$best"
  for t in $SEEN $UNSEEN; do has_router "task-$t" && configs="$configs,router:task-$t@task"; done
  for s in $SINGLE_SKILLS; do configs="$configs,skill:$s"; done
  configs="$configs,uniform"
  limit=(--limit "$EVAL_LIMIT")
  [[ $EVAL_LIMIT == select ]] && limit=("${select_limit[@]}")
  timed eval "$BIN" eval --all --pack "$BUILD" --raw "$RAW" --configs "$configs" \
    "${limit[@]}" --task-calibration "$SCORING" --threads "$THREADS" --out "$WORK/eval" --resume \
    --reuse "$WORK/eval-select" >&2
  # The same items worded as a user would type them (no skill template uses these words).
  [[ $EVAL_USER == 1 ]] && timed eval-user "$BIN" eval --all --pack "$BUILD" --raw "$RAW" --prompt-variant user \
    --configs "base,router:$best" "${limit[@]}" --task-calibration "$SCORING" \
    --threads "$THREADS" --out "$WORK/eval-user" --resume >&2
  # How the pack answers prompts in users' own words: the first 3 free-form prompts of each
  # skill, routed by the default router, greedy.
  if [[ ! -s "$WORK/freeform-answers.jsonl" ]]; then
    python3 - "$BIN" "$BUILD" examples/routing/freeform.jsonl >"$WORK/freeform-answers.jsonl.tmp" <<'PY'
import collections, json, subprocess, sys
binary, pack, prompts = sys.argv[1:]
seen = collections.Counter()
for line in open(prompts):
    item = json.loads(line)
    seen[item["skill"]] += 1
    if seen[item["skill"]] > 3:
        continue
    out = subprocess.run([binary, "run", "--pack", pack, "--temp", "0", "-n", "96", "--json",
                          item["prompt"]], capture_output=True, text=True, check=True)
    run = json.loads(out.stdout)
    print(json.dumps({"id": item["id"], "skill": item["skill"], "prompt": item["prompt"],
                      "weights": run.get("skills"), "answer": run["text"]}), flush=True)
PY
    mv "$WORK/freeform-answers.jsonl.tmp" "$WORK/freeform-answers.jsonl"
  fi
  # Top-1 routing on the free-form prompts: the tuning set, and the held-out one (never tuned on);
  # and how many held-out off-topic requests go to no skill.
  for set in freeform-dev freeform offtopic; do
    "$BIN" router accuracy --pack "$BUILD" --set "examples/routing/$set.jsonl" --json \
      >"$WORK/$set.json.tmp"
    mv "$WORK/$set.json.tmp" "$WORK/$set.json"
  done
  # With the final table on the selection's items, base and the default routing on the whole
  # dev split of every task (the selection's predictions stand for the first items).
  if [[ $EVAL_LIMIT == select && $EVAL_WHOLE == 1 ]]; then
    timed eval-whole "$BIN" eval --all --pack "$BUILD" --raw "$RAW" --configs "base,router:$best" \
      --limit 0 --task-calibration "$SCORING" --threads "$THREADS" --out "$WORK/eval-whole" --resume \
      --reuse "$WORK/eval-select" >&2
  fi
  # Last, for the report's comparison only: the other router candidates on the selection items
  # (features with and without a forward pass, prototypes).
  others=$select
  for r in $CANDIDATE_ROUTERS; do has_router "$r" && others="$others,router:$r"; done
  [[ $others == "$select" ]] || timed eval-select-others "$BIN" eval --all --pack "$BUILD" --raw "$RAW" \
    --configs "$others" "${select_limit[@]}" --task-calibration "$SCORING" --threads "$THREADS" \
    --out "$WORK/eval-select" --resume >&2
fi

if stage bench; then
  # Time to first token with routing / without, one router per feature kind (the task routers
  # share general's features and cost).
  echo "== router bench" >&2
  routers=general
  for r in general-hidden general-embedding prototype; do has_router "$r" && routers="$routers,$r"; done
  "$BIN" router bench --pack "$BUILD" --routers "$routers" \
    --task pubmedqa --raw "$RAW" --threads "$THREADS" --json >"$WORK/router-bench.json.tmp"
  mv "$WORK/router-bench.json.tmp" "$WORK/router-bench.json"
fi

if stage report; then
  echo "== report" >&2
  # The skills' dev-loss curves in one chart, and where each stopped.
  "$BIN" curves "$WORK"/skills/* -o "$BUILD/dev-loss.svg" >"$WORK/curves.md"
  python3 scripts/medical-report.py --work "$WORK" --pack "$BUILD" --raw "$RAW" --seed "$SEED" \
    --epochs "$EPOCHS" --max-steps "$MAX_STEPS" --targets "$TARGETS" --threads "$THREADS" \
    --eval-limit "$EVAL_LIMIT" --settings "${SETTINGS% }"
fi

if stage publish; then
  echo "== publish" >&2
  "$BIN" pack check "$BUILD" >&2
  [[ -s "$BUILD/REPORT.md" ]] || { echo "no $BUILD/REPORT.md: run the report stage first" >&2; exit 1; }
  # Copy beside PACK, then swap by renames; an interruption leaves PACK or PACK.old whole.
  rm -rf "$PACK.new"
  cp -r "$BUILD" "$PACK.new"
  if [[ -d $PACK ]]; then
    rm -rf "$PACK.old"
    mv "$PACK" "$PACK.old"
  fi
  mv "$PACK.new" "$PACK"
  rm -rf "$PACK.old"
  echo "published $PACK" >&2
fi
