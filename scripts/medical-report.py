#!/usr/bin/env python3
"""Writes the medical pack's REPORT.md (and copies the eval chart) from a build's outputs:
the final table on the whole dev splits (WORK/eval), the selection of the default routing and
the router candidates on each task's first dev items (WORK/eval-select), per-stage wall times,
data hashes and the exact command and seeds. Called by scripts/build-medical-pack.sh as its last
stage; before the final evaluation, `medical-report.py choose-default WORK` prints the committing
mode of `general` the build makes the pack's default."""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

SEEN = ["pubmedqa", "medqa", "medmcqa", "bc5cdr", "chemprot", "hoc"]
UNSEEN = ["healthver", "covidqa", "meqsum"]
TITLES = {
    "pubmedqa": "PubMedQA", "medqa": "MedQA", "medmcqa": "MedMCQA", "bc5cdr": "BC5CDR NER",
    "chemprot": "ChemProt", "hoc": "HoC", "healthver": "HealthVer", "covidqa": "COVID-QA",
    "meqsum": "MeQSum",
}


def pack_default_router(pack):
    """The pack's default router (pack.toml `[defaults] router`), or `general`."""
    import tomllib
    with open(os.path.join(pack, "pack.toml"), "rb") as f:
        return tomllib.load(f).get("defaults", {}).get("router") or "general"


def headline(summary):
    return summary["metrics"][0][1]


def interval_cell(summary):
    """`score [lo, hi]` in percent for one run's summary (– when it is missing)."""
    if summary is None:
        return "–"
    iv = summary.get("interval")
    return f"{100 * headline(summary):.1f}" + (f" [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]" if iv else "")


def mean(vals):
    # A group mean only over complete columns: a partial mean would compare different tasks.
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


def read_predictions(path):
    """The predictions of a finished or checkpointed run (a checkpoint's header line skipped)."""
    for candidate in (path, path.replace(".predictions.jsonl", ".predictions.partial.jsonl")):
        if os.path.exists(candidate):
            rows = [json.loads(line) for line in open(candidate) if line.strip()]
            return [r for r in rows if "id" in r]
    return None


def choice_figures(rows, limit):
    """Macro-F1 over the gold labels, accuracy and the most frequent predicted option's share
    (percent) of a choice task's first `limit` predictions; None when fewer were made."""
    if not rows:
        return None
    rows = rows[:limit]
    gold = [r["gold_index"] for r in rows]
    pred = [r["predicted_index"] for r in rows]
    f1 = []
    for label in sorted(set(gold)):
        tp = sum(p == label and g == label for p, g in zip(pred, gold))
        wrong = sum((p == label) != (g == label) for p, g in zip(pred, gold))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + wrong))
    top = max(pred.count(p) for p in set(pred))
    return (100 * sum(f1) / len(f1), 100 * sum(p == g for p, g in zip(pred, gold)) / len(rows),
            100 * top / len(rows))


def scoring_section(work):
    """How options are scored: plain log-likelihood against content-free calibration (PubMedQA,
    HealthVer) and against permutation averaging (MedQA, MedMCQA), base and `general` on the
    same first dev items (WORK/eval-calibration holds the runs the pipeline no longer makes)."""
    root = os.path.join(work, "eval-calibration")
    if not os.path.isdir(root):
        return []
    md = ["## Option scoring", "",
          "Choice tasks score each option by its log-likelihood after the prompt. Two corrections were tried on",
          "each task's first dev items, for base and `general` alike; cells are macro-F1 / accuracy / the most",
          "frequent predicted option's share (⚠ above 80 %):", "",
          "| task | items | configuration | plain | corrected | correction |", "|---|---|---|---|---|---|"]
    trials = [("pubmedqa", 100, "content-free", "eval-calibration/content-free"),
              ("healthver", 100, "content-free", "eval-calibration/content-free"),
              ("medqa", 200, "permutation", "eval-select"),
              ("medmcqa", 200, "permutation", "eval-select")]
    for task, limit, correction, corrected_dir in trials:
        for config in ("base", "router:general"):
            plain_dir = "eval-select" if correction == "content-free" else "eval-calibration/plain"
            cells = []
            for d, calibrated in ((plain_dir, False), (corrected_dir, True)):
                rows = read_predictions(os.path.join(work, d, config, f"{task}.predictions.jsonl"))
                rows = [r for r in rows or [] if bool(r.get("calibrated")) == calibrated]
                f = choice_figures(rows, limit)
                cell = "–" if f is None else f"{f[0]:.1f} / {f[1]:.1f} / {f[2]:.0f} %" + (" ⚠" if f[2] > 80 else "")
                cells.append(cell + (f" ({len(rows)} items)" if 0 < len(rows) < limit else ""))
            md.append(f"| {TITLES[task]} | {limit} | {config.removeprefix('router:')} | {cells[0]} | {cells[1]} | {correction} |")
    md += ["",
           "Content-free calibration (each option's log-likelihood after the same prompt with the input replaced by",
           "N/A, subtracted) moved the base model off its single label but not the pack, so it is not used.",
           "Permutation scoring (each option text's log-likelihood averaged over the four rotations of the texts among",
           "the letters A–D, the skills routed once on the question as given) removes the letter preference the",
           "pack's `mcqa` skill brings; MedQA and MedMCQA are scored so in every table of this report (the",
           "user-worded one too: the options block is rotated wherever the wording puts it).", ""]
    return md


COMMITTING_MODES = {"general": "softmax", "general-top1": "top1:0.5", "general-sparsemax": "sparsemax"}


def group_ratio(scores, config, group):
    """A configuration's group mean ÷ base's on the same items (None where a task is missing)."""
    v, base = mean([scores.get((config, t)) for t in group]), mean([scores.get(("base", t)) for t in group])
    return None if v is None or not base else v / base


def best_committing_mode(work):
    """The committing mode of `general` with the best selection score (WORK/eval-select: each
    task's first dev items): the mean over the two groups of the group mean ÷ base's (`general`
    where none has every task). Prints `ROUTER MODE`."""
    results = json.load(open(os.path.join(work, "eval-select", "results.json")))
    scores = {(s["config"], s["task"]): headline(s) for s in results}

    scored = []
    for router in COMMITTING_MODES:
        parts = [group_ratio(scores, f"router:{router}", g) for g in (SEEN, UNSEEN)]
        if None not in parts:
            scored.append((sum(parts) / 2, router))
    best = max(scored)[1] if scored else "general"
    return f"{best} {COMMITTING_MODES[best]}"


def main():
    if sys.argv[1:2] == ["choose-default"]:
        # `medical-report.py choose-default WORK`: what the build makes the pack's default router.
        print(best_committing_mode(sys.argv[2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--seed", required=True)
    ap.add_argument("--epochs", required=True)
    ap.add_argument("--max-steps", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--threads", required=True, help="threads the router bench ran with")
    ap.add_argument("--eval-limit", default="0", help="items per task of the final table (0: whole splits)")
    ap.add_argument("--settings", default="", help="the build's settings that differ from its defaults, as VAR=VALUE words")
    a = ap.parse_args()

    results = json.load(open(os.path.join(a.work, "eval", "results.json")))
    by = {(s["config"], s["task"]): s for s in results}
    configs = []
    for s in results:
        if s["config"] not in configs:
            configs.append(s["config"])
    default = pack_default_router(a.pack)

    def score(config, task):
        s = by.get((config, task))
        return None if s is None else headline(s)

    def best_single(task):
        singles = [(c, score(c, task)) for c in configs if c.startswith("skill:") and score(c, task) is not None]
        return max(singles, key=lambda x: x[1]) if singles else (None, None)

    # The final table (whole dev splits): column label -> configuration for a task.
    columns = [("base", lambda t: "base"), ("uniform", lambda t: "uniform")]
    # A build may evaluate no single skill (SINGLE_SKILLS empty): then no oracle column.
    has_singles = any(c.startswith("skill:") for c in configs)
    if has_singles:
        columns.append(("best single skill", lambda t: best_single(t)[0]))
    if default != "general":
        columns.append((f"{default} (default)", lambda t: f"router:{default}"))
    columns.append(("general" + (" (default)" if default == "general" else ""), lambda t: "router:general"))
    columns.append(("task router", lambda t: f"router:task-{t}"))

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def with_interval(config, task):
        s = by.get((config, task))
        if s is None:
            return "–"
        lo_hi = s.get("interval")
        cell = pct(headline(s)) + (f" [{100 * lo_hi[0]:.1f}, {100 * lo_hi[1]:.1f}]" if lo_hi else "")
        # A task router that fell back shares its twin's predictions (the same weights).
        return cell + (f" (= {s['same_as'].removeprefix('router:')})" if s.get("same_as") else "")

    def group_mean(group, column):
        config = dict(columns)[column]
        return mean([score(config(t), t) for t in group])

    import tomllib
    with open(os.path.join(a.pack, "pack.toml"), "rb") as f:
        manifest = tomllib.load(f)
    base = manifest.get("base", {})
    md = [f"# Medical pack report: {base.get('model', 'the base model')} (dev splits)", "",
          f"{manifest.get('pack', {}).get('description', '')}: {base.get('architecture', '?')} architecture, "
          f"{base.get('n_layer', '?')} layers, width {base.get('n_embd', '?')}, prompts in the "
          f"`{base.get('prompt_format', 'chat-template')}` format.", ""]
    split_words = {"0": "its **whole dev split**", "select": "its first dev items (the selection's)"}
    md.append(f"Headline metric per task on {split_words.get(a.eval_limit, f'its first {a.eval_limit} dev items')}, "
              "in percent, with the 95 % bootstrap interval over")
    md.append("the items (differences inside it are noise). Classification tasks take macro-F1 as their headline.")
    md.append("")
    md.append("| task | metric | items | " + " | ".join(label for label, _ in columns) + " |")
    md.append("|---|---|---|" + "---|" * len(columns))
    for task in SEEN + UNSEEN:
        metric = by[("base", task)]["metrics"][0][0] if ("base", task) in by else ""
        items = by[("base", task)]["items"] if ("base", task) in by else "–"
        name = TITLES[task] + ("" if task in SEEN else " (unseen)")
        cells = [with_interval(config(task), task) for _, config in columns]
        if has_singles:
            single_column = [label for label, _ in columns].index("best single skill")
            cells[single_column] += f" ({(best_single(task)[0] or '–').removeprefix('skill:')})"
        md.append(f"| {name} | {metric} | {items} | " + " | ".join(cells) + " |")
    for label, group in [("mean of seen", SEEN), ("mean of unseen", UNSEEN)]:
        md.append(f"| **{label}** | | | " + " | ".join(pct(group_mean(group, c)) for c, _ in columns) + " |")
    md.append("")
    md.append(f"`{default}` is the pack's default routing, chosen below on the first items of each task. `general` reads")
    md.append("no hidden state (segment-lexical features: no extra forward pass). Each task router is selected on")
    if has_singles:
        md.append("held-out train items of its task. The best single skill is picked per task among the skills that fit it,")
        md.append("with the dev scores themselves (an oracle choice, as a bound for routing).")
    else:
        md.append("held-out train items of its task. No single skill was evaluated alone in this build (SINGLE_SKILLS).")
    md.append("")

    # The selection (each task's first dev items): committing modes and router candidates.
    select_path = os.path.join(a.work, "eval-select", "results.json")
    select = json.load(open(select_path)) if os.path.exists(select_path) else []
    sby = {(s["config"], s["task"]): headline(s) for s in select}
    sitems = {s["task"]: s["items"] for s in select if s["config"] == "base"}
    candidates = [c for c in ["uniform", "router:general", "router:general-top1", "router:general-sparsemax",
                              "router:general-hidden", "router:general-embedding", "router:prototype"]
                  if any(k[0] == c for k in sby)]
    if select:
        md.append("## Choosing the default routing and the router features")
        md.append("")
        md.append("On each task's first dev items (every configuration on the same items"
                  + ("; the whole splits above are for the chosen default" if a.eval_limit == "0" else "") + "):")
        md.append("`general` with softmax weights, committing to its top skill when its weight is")
        md.append("≥ 0.5 (`general-top1`) or to a sparse set (`general-sparsemax`); routers on other features —")
        md.append("`general-hidden` (mean hidden states: one extra forward pass), `general-embedding` (mean token")
        md.append("embeddings) and `prototype` (nearest skill centroid, no training); uniform weights over all twelve skills.")
        md.append("The committing mode with the best mean of the two groups' ratios to base becomes the default.")
        md.append("")
        heads = ["base"] + candidates
        md.append("| task | items | " + " | ".join(c.removeprefix("router:") for c in heads) + " |")
        md.append("|---|---|" + "---|" * len(heads))
        for task in SEEN + UNSEEN:
            md.append(f"| {TITLES[task]} | {sitems.get(task, '–')} | " + " | ".join(pct(sby.get((c, task))) for c in heads) + " |")
        for label, group in [("seen", SEEN), ("unseen", UNSEEN)]:
            cells = []
            for c in heads:
                v, r = mean([sby.get((c, t)) for t in group]), group_ratio(sby, c, group)
                cells.append("–" if v is None else f"{100 * v:.1f}" + ("" if r is None or c == "base" else f" ({r:.2f} ×)"))
            md.append(f"| **mean of {label}** | | " + " | ".join(cells) + " |")
        md.append("")

    md += scoring_section(a.work)

    md.append("## Targets")
    md.append("")
    md.append(f"The pack's default routing is `router:{default}`. Targets: its mean ≥ 1.40 × base on the seen tasks and")
    md.append("≥ 1.55 × on the unseen ones, " + ("≥ the best single skill (oracle) on each group's mean, " if has_singles else "")
              + "no task below base beyond")
    md.append("its interval, no collapsed classifier among the default and the task routers, every task router ≥ `general`")
    md.append("on its task, ≥ 90 % top-1 on the free-form routing set, routing overhead ≤ 1.10.")
    md.append("")
    md.append("| group | routing | mean | × base | target |" + (" vs best single skill (points) |" if has_singles else ""))
    md.append("|---|---|---|---|---|" + ("---|" if has_singles else ""))
    for label, group, target in [("seen", SEEN, 1.40), ("unseen", UNSEEN, 1.55)]:
        base = group_mean(group, "base")
        single = group_mean(group, "best single skill") if has_singles else None
        for column, _ in columns:
            if column in ("base", "uniform", "best single skill"):
                continue
            v = group_mean(group, column)
            if base is None or v is None:
                continue
            ratio = v / base if base else float("inf")
            verdict = "met" if ratio >= target else f"missed ({ratio:.2f} ×)"
            vs_single = "–" if single is None else f"{100 * (v - single):+.1f}"
            md.append(f"| {label} | {column} | {100 * v:.1f} | {ratio:.2f} × | {target:.2f} ×: {verdict} |"
                      + (f" {vs_single} |" if has_singles else ""))
    md.append("")
    # Per task, for the default routing and every task router.
    checks = []
    below = []
    for task in SEEN + UNSEEN:
        d, b = by.get((f"router:{default}", task)), by.get(("base", task))
        if d and b and d.get("interval") and d["interval"][1] < headline(b):
            below.append(f"{TITLES[task]} ({100 * headline(d):.1f} [{100 * d['interval'][0]:.1f}, {100 * d['interval'][1]:.1f}] vs base {100 * headline(b):.1f})")
    checks.append(("no task below base beyond its interval (default)", not below, "; ".join(below) or "none"))
    # The same check on the whole dev splits, where they were evaluated (the final table).
    whole_path = os.path.join(a.work, "eval-whole", "results.json")
    if os.path.exists(whole_path):
        wby = {(r["config"], r["task"]): r for r in json.load(open(whole_path))}
        below_whole = []
        for task in SEEN + UNSEEN:
            d, b = wby.get((f"router:{default}", task)), wby.get(("base", task))
            if d and b and d.get("interval") and d["interval"][1] < headline(b):
                below_whole.append(f"{TITLES[task]} ({100 * headline(d):.1f} [{100 * d['interval'][0]:.1f}, {100 * d['interval'][1]:.1f}] vs base {100 * headline(b):.1f})")
        checks.append(("… on the whole dev splits", not below_whole, "; ".join(below_whole) or "none"))
    collapsed = []
    for (config, task), s in by.items():
        own_task_router = config.startswith("router:task-") and config.split("@")[0] == f"router:task-{task}"
        if (config == f"router:{default}" or own_task_router) and (s.get("balance") or {}).get("collapsed"):
            bal = s["balance"]
            collapsed.append(f"{config} on {TITLES[task]} ({bal['predicted_top']} {100 * bal['predicted_share']:.0f} %, gold {100 * bal['gold_share']:.0f} %)")
    checks.append(("no collapsed classifier (default, task routers)", not collapsed, "; ".join(collapsed) or "none"))
    worse = []
    for task in SEEN + UNSEEN:
        t, g = score(f"router:task-{task}", task), score("router:general", task)
        if t is not None and g is not None and round(1000 * t) < round(1000 * g):
            worse.append(f"{TITLES[task]} ({100 * t:.1f} < {100 * g:.1f})")
    checks.append(("every task router ≥ general on its task", not worse, "; ".join(worse) or "none below"))
    freeform = os.path.join(a.work, "freeform.json")
    if os.path.exists(freeform):
        f = json.load(open(freeform))
        r = next((r for r in f["routers"] if r["router"] == default), None)
        if r:
            checks.append((f"free-form routing ≥ 90 % top-1 ({default})", r["top1"] >= 0.9,
                           f"{r['correct']}/{r['prompts']} ({100 * r['top1']:.1f} %)"))
    bench = os.path.join(a.work, "router-bench.json")
    if os.path.exists(bench):
        b = json.load(open(bench))
        r = next((r for r in b["routers"] if r["router"] == default.removesuffix("-top1").removesuffix("-sparsemax")), None)
        if r:
            checks.append((f"routing overhead ≤ 1.10 ({r['router']})", r["ratio"] <= 1.10, f"TTFT ratio {r['ratio']:.3f}"))
    md.append("| check | met | measured |")
    md.append("|---|---|---|")
    for name, ok, detail in checks:
        md.append(f"| {name} | {'yes' if ok else '**no**'} | {detail} |")
    md.append("")
    # How often routing gives no skill at all (the base model): a task router whose validation chose
    # the base model, or a zero weight from the router's "no skill" output.
    shares = []
    for task in SEEN + UNSEEN:
        d, t = by.get((f"router:{default}", task)), by.get((f"router:task-{task}", task))
        share = lambda s: "–" if s is None or s.get("no_skill_share") is None else f"{100 * s['no_skill_share']:.0f} %"
        shares.append(f"| {TITLES[task]} | {share(d)} | {share(t)} |")
    md.append("Items routed to no skill (the base model), per task:")
    md.append("")
    md.append(f"| task | {default} | task router |")
    md.append("|---|---|---|")
    md.extend(shares)
    md.append("")
    whole = os.path.join(a.work, "eval-whole", "results.json")
    if os.path.exists(whole):
        w = json.load(open(whole))
        wby = {(r["config"], r["task"]): r for r in w}
        wcols = [c for c in ("base", f"router:{default}") if any(k[0] == c for k in wby)]
        md.append("## Base and the default routing on the whole dev splits")
        md.append("")
        md.append("The table above is on each task's first dev items; here base and the default routing on every dev item,")
        md.append("with 95 % intervals:")
        md.append("")
        md.append("| task | items | " + " | ".join(c.removeprefix("router:") for c in wcols) + " |")
        md.append("|---|---|" + "---|" * len(wcols))
        for task in SEEN + UNSEEN:
            cells = [interval_cell(wby.get((c, task))) for c in wcols]
            items = (wby.get(("base", task)) or {}).get("items", "–")
            md.append(f"| {TITLES[task]} | {items} | " + " | ".join(cells) + " |")
        wscores = {k: headline(r) for k, r in wby.items()}
        for label, group, target in [("seen", SEEN, 1.40), ("unseen", UNSEEN, 1.55)]:
            cells = []
            for c in wcols:
                v, r = mean([wscores.get((c, t)) for t in group]), group_ratio(wscores, c, group)
                cells.append("–" if v is None else f"{100 * v:.1f}" + ("" if r is None or c == "base" else f" ({r:.2f} ×, target {target:.2f} ×)"))
            md.append(f"| **mean of {label}** | | " + " | ".join(cells) + " |")
        md.append("")
    user = os.path.join(a.work, "eval-user", "results.json")
    if os.path.exists(user):
        u = json.load(open(user))
        ub = {(r["config"], r["task"]): headline(r) for r in u}
        ucols = [c for c in ("base", f"router:{default}") if any(k[0] == c for k in ub)]
        md.append("## The same items as users word them")
        md.append("")
        md.append("`eval --prompt-variant user`: each dev item asked in a user's words (no skill template uses them).")
        md.append("")
        md.append("| task | " + " | ".join(c.removeprefix("router:") for c in ucols) + " |")
        md.append("|---|" + "---|" * len(ucols))
        for task in SEEN + UNSEEN:
            cells = [interval_cell(next((r for r in u if r["config"] == c and r["task"] == task), None)) for c in ucols]
            md.append(f"| {TITLES[task]} | " + " | ".join(cells) + " |")
        for label, group in [("mean of seen", SEEN), ("mean of unseen", UNSEEN)]:
            md.append(f"| **{label}** | " + " | ".join(pct(mean([ub.get((c, t)) for t in group])) for c in ucols) + " |")
        md.append("")
    sets = [("freeform.json", "held-out set, never tuned on"), ("freeform-dev.json", "tuning set"),
            ("offtopic.json", "held-out requests outside medicine: the right choice is no skill")]
    if any(os.path.exists(os.path.join(a.work, name)) for name, _ in sets):
        md.append("## Routing prompts written in users' own words")
        md.append("")
        md.append("`skillpack router accuracy --set SET`: the router's top skill is the skill the prompt was written "
                  "for (hand-written prompts, none in any skill template; the routers train on a third set, "
                  "`examples/routing/train.jsonl`, which shares no 6-word sequence with these).")
        md.append("")
        md.append("| set | router | features | top-1 | per skill (correct/prompts) |")
        md.append("|---|---|---|---|---|")
        for name, role in sets:
            path = os.path.join(a.work, name)
            if not os.path.exists(path):
                continue
            f = json.load(open(path))
            label = f"`{os.path.basename(f.get('set', name))}` ({role})"
            for r in f["routers"]:
                per = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(r["per_skill"].items()))
                md.append(f"| {label} | {r['router']} | {r['features']} | {r['correct']}/{r['prompts']} ({100 * r['top1']:.0f} %) | {per} |")
        md.append("")
    # What the skills answer to prompts in users' own words (the first three free-form prompts of
    # each skill, routed by the pack's default router, greedy): the format, not only the route.
    answers_path = os.path.join(a.work, "freeform-answers.jsonl")
    if os.path.exists(answers_path):
        answers = [json.loads(line) for line in open(answers_path) if line.strip()]
        md.append("## How the pack answers prompts in users' own words")
        md.append("")
        md.append("The first three prompts of each skill in `examples/routing/freeform.jsonl`, run with "
                  "`skillpack run --pack PACK --temp 0 -n 96` (the pack's default routing; answers cut at 160 "
                  "characters):")
        md.append("")
        md.append("| written for | prompt | weights | answer |")
        md.append("|---|---|---|---|")

        def cell(text, width):
            text = " ".join(text.split()).replace("|", "\\|")
            return text if len(text) <= width else text[: width - 1] + "…"

        for item in answers:
            weights = ", ".join(f"{skill} {weight:.2f}" for skill, weight in (item.get("weights") or [])) or "(no skill)"
            md.append(f"| {item['skill']} | {cell(item['prompt'], 90)} | {weights} | {cell(item['answer'], 160)} |")
        md.append("")
    # Stage 2: what the task routers learned, and, for the first two whose routing changed, their
    # weights before and after training.
    learned_rows, before_after = [], []
    fmt = lambda w: "–" if w is None else ", ".join(f"{k} {v:.2f}" for k, v in sorted(w.items(), key=lambda x: -x[1])) or "(no skill)"
    for task in SEEN + UNSEEN:
        path = os.path.join(a.pack, "routers", f"task-{task}.json")
        if not os.path.exists(path):
            continue
        training = json.load(open(path)).get("training", {})
        v = training.get("validation", {})
        learned_rows.append(f"| {TITLES[task]} | {v.get('items', '–')} | {v.get('chosen', '–')} | {training.get('note', '')} |")
        rows_ba = training.get("weights_before_after")
        if len(before_after) == 2 or not rows_ba or all(r["before"] == r["after"] for r in rows_ba):
            continue
        table = [f"Weights of `task-{task}` on {len(rows_ba)} validation prompts, before (warm start) → after training:",
                 "", "| prompt | before | after |", "|---|---|---|"]
        for r in rows_ba:
            prompt = r["prompt"][:90].replace("|", "/").replace("\n", " ")
            table.append(f"| {prompt}… | {fmt(r['before'])} | {fmt(r['after'])} |")
        before_after.append(table + [""])
    if learned_rows:
        md.append("## Stage 2: task routers")
        md.append("")
        md.append("Each task router is selected on held-out train items by the task's own metric among the warm start")
        md.append("(`general`), the base model and the trained heads; a router that does not beat the warm start keeps it.")
        md.append("")
        md.append("| task | validation items | chosen | note |")
        md.append("|---|---|---|---|")
        md.extend(learned_rows)
        md.append("")
        for table in before_after:
            md.extend(table)
    curves = os.path.join(a.work, "curves.md")
    if os.path.exists(curves):
        md.append("## Skill training: dev loss")
        md.append("")
        md.append("![dev loss of every skill by step](dev-loss.svg)")
        md.append("")
        md.append(open(curves).read())
        md.append("")
    bench = os.path.join(a.work, "router-bench.json")
    if os.path.exists(bench):
        b = json.load(open(bench))
        md.append("## Routing overhead")
        md.append("")
        md.append(f"`skillpack router bench` on {b['prompts']} {TITLES.get(b['task'], b['task'])} prompts "
                  f"(mean {b['mean_prompt_tokens']:.0f} tokens), {a.threads} threads: time to first token with routing ÷ without "
                  f"(base {b['base_ttft_ms']:.0f} ms; target ≤ 1.10 for the cheap variant).")
        md.append("")
        md.append("Beside it, each router's dev score from the selection above (group mean ÷ base's on the same items).")
        md.append("")
        md.append("| router | features | features (ms) | weights applied (ms) | TTFT (ms) | ratio | seen × base | unseen × base |")
        md.append("|---|---|---|---|---|---|---|---|")
        for r in b["routers"]:
            dev = [group_ratio(sby, f"router:{r['router']}", g) for g in (SEEN, UNSEEN)]
            dev = ["–" if v is None else f"{v:.2f} ×" for v in dev]
            md.append(f"| {r['router']} | {r['features']} | {r['features_ms']:.1f} | {r['apply_ms']:.1f} | {r['ttft_ms']:.0f} "
                      f"| {r['ratio']:.3f} | {dev[0]} | {dev[1]} |")
        md.append("")
    md.append("Full tables of every configuration and metric (`eval/table.md` and `eval-select/table.md` of the build),")
    md.append(f"on {split_words.get(a.eval_limit, f'its first {a.eval_limit} dev items').removeprefix('its ')} of each task:")
    md.append("")
    md.append(open(os.path.join(a.work, "eval", "table.md")).read())
    if select:
        md.append("First dev items of each task (the selection):")
        md.append("")
        md.append(open(os.path.join(a.work, "eval-select", "table.md")).read())
    md.append("![headline metric per task and configuration](chart.svg)")
    md.append("")
    md.append("## How it was made")
    md.append("")
    md.append("```sh")
    raw = os.path.relpath(os.path.realpath(a.raw), os.path.realpath(os.getcwd()))
    settings = f"{a.settings} " if a.settings else ""
    md.append(f"RAW={raw} SEED={a.seed} EPOCHS={a.epochs} MAX_STEPS={a.max_steps} TARGETS={a.targets} {settings}scripts/build-medical-pack.sh")
    md.append("```")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md.append(f"Report written at commit {commit}; skills: AdaLoRA on {a.targets}, r 12 → 8, {a.epochs} epoch(s) within at most {a.max_steps} steps, best step by dev loss, seed {a.seed}.")
    md.append("")
    md.append("| stage | wall time (s), summed over the runs |")
    md.append("|---|---|")
    times = os.path.join(a.work, "stage-times.tsv")
    if os.path.exists(times):
        # Summed per stage over the runs (an interrupted stage resumes in a later run).
        summed = {}
        for line in open(times):
            name, secs = line.rstrip("\n").split("\t")
            summed[name] = summed.get(name, 0) + int(secs)
        for name, secs in summed.items():
            md.append(f"| {name} | {secs} |")
    md.append("")
    evaluated = [r for r in results + select if not r.get("same_as")]
    total = sum(r["wall_s"] for r in evaluated)
    items = sum(r["items"] - r.get("reused_items", 0) for r in evaluated)
    md.append(f"Evaluation: {len(results) + len(select)} task × configuration results, {len(evaluated)} of them evaluated "
              f"(the rest share the predictions of a configuration with the same weights), {items} items scored in "
              f"{total:.0f} s summed over the runs' own wall times (`wall_s` in each summary; a whole-split run "
              f"takes its first items from the selection's predictions).")
    md.append("")
    md.append("Skill data (sha256 of each train.jsonl):")
    md.append("")
    manifest = json.load(open(os.path.join(a.work, "data", "manifest.json")))
    for s in manifest["skills"]:
        md.append(f"- {s['skill']}: {s['train']} records, `{s['sha256']['train.jsonl']}`")
    sums = os.path.join(a.raw, "..", "sha256sums.txt")
    if os.path.exists(sums):
        digest = hashlib.sha256(open(sums, "rb").read()).hexdigest()
        md.append("")
        md.append(f"Raw data: `sha256sums.txt` of the shared data has sha256 `{digest}`.")
    md.append("")
    with open(os.path.join(a.pack, "REPORT.md.tmp"), "w") as f:
        f.write("\n".join(md))
    os.replace(os.path.join(a.pack, "REPORT.md.tmp"), os.path.join(a.pack, "REPORT.md"))
    shutil.copyfile(os.path.join(a.work, "eval", "chart.svg"), os.path.join(a.pack, "chart.svg"))
    print(f"wrote {os.path.join(a.pack, 'REPORT.md')}")


if __name__ == "__main__":
    main()
