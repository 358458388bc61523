#!/usr/bin/env python3
"""Writes the medical pack's REPORT.md (and copies the eval chart) from a build's outputs:
the eval results table (skillpack eval --all), per-stage wall times, data hashes and the exact
command and seeds. Called by scripts/build-medical-pack.sh as its last stage; before it,
`medical-report.py choose-default WORK` prints the committing mode of `general` the build makes
the pack's default."""

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


def mean(vals):
    # A group mean only over complete columns: a partial mean would compare different tasks.
    return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)


COMMITTING_MODES = {"general": "softmax", "general-top1": "top1:0.5", "general-sparsemax": "sparsemax"}


def best_committing_mode(work):
    """The committing mode of `general` with the best dev score: the mean over the two groups of
    the group mean ÷ base's (`general` where none has every task). Prints `ROUTER MODE`."""
    results = json.load(open(os.path.join(work, "eval", "results.json")))
    scores = {(s["config"], s["task"]): headline(s) for s in results}

    def ratio(config, group):
        v, base = mean([scores.get((config, t)) for t in group]), mean([scores.get(("base", t)) for t in group])
        return None if v is None or not base else v / base

    scored = []
    for router in COMMITTING_MODES:
        parts = [ratio(f"router:{router}", g) for g in (SEEN, UNSEEN)]
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
    a = ap.parse_args()

    results = json.load(open(os.path.join(a.work, "eval", "results.json")))
    by = {(s["config"], s["task"]): s for s in results}
    configs = []
    for s in results:
        if s["config"] not in configs:
            configs.append(s["config"])

    def score(config, task):
        s = by.get((config, task))
        return None if s is None else headline(s)

    # Routed columns: (label, configuration for a task).
    # (b) general routers trained on the skills' records; (a) stage 2: one router per task,
    # trained on the task's own train items; (c) prototypes (no training).
    routers = [
        ("router (b) general", lambda t: "router:general"),
        ("router (b) general-top1", lambda t: "router:general-top1"),
        ("router (b) general-sparsemax", lambda t: "router:general-sparsemax"),
        ("router (a) task", lambda t: f"router:task-{t}"),
        ("router (b) general-hidden", lambda t: "router:general-hidden"),
        ("router (b) general-embedding", lambda t: "router:general-embedding"),
        ("router (c) prototype", lambda t: "router:prototype"),
    ]

    def best_single(task):
        singles = [(c, score(c, task)) for c in configs if c.startswith("skill:") and score(c, task) is not None]
        return max(singles, key=lambda x: x[1]) if singles else (None, None)

    # One row per task: column label -> score (None where not evaluated).
    rows = {}
    for task in SEEN + UNSEEN:
        row = {"base": score("base", task), "uniform": score("uniform", task)}
        row["best single skill"] = best_single(task)[1]
        for label, config in routers:
            row[label] = score(config(task), task)
        rows[task] = row
    columns = ["base", "uniform", "best single skill"] + [label for label, _ in routers]

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def group_mean(group, column):
        return mean([rows[t][column] for t in group])

    md = ["# Medical pack report (dev splits)", ""]
    md.append("| task | metric | " + " | ".join(columns) + " |")
    md.append("|---|---|" + "---|" * len(columns))
    for task, row in rows.items():
        metric = by[("base", task)]["metrics"][0][0] if ("base", task) in by else ""
        name = TITLES[task] + ("" if task in SEEN else " (unseen)")
        cells = [pct(row[c]) for c in columns]
        cells[2] += f" ({best_single(task)[0] or '–'})"
        md.append(f"| {name} | {metric} | " + " | ".join(cells) + " |")
    for label, group in [("mean of seen", SEEN), ("mean of unseen", UNSEEN)]:
        md.append(f"| **{label}** | | " + " | ".join(pct(group_mean(group, c)) for c in columns) + " |")
    md.append("")
    md.append("Scores in percent on each task's whole dev split. `general` is the pack's default router")
    md.append("(segment-lexical features: no extra forward pass); `general-top1` and `general-sparsemax` are the")
    md.append("same router committing to its top skill (when its weight is ≥ 0.5) or to a sparse set;")
    md.append("`general-hidden` reads mean hidden states (one extra forward pass). The best single skill is")
    md.append("picked per task with the dev scores themselves (an oracle choice, as a bound for routing).")
    md.append("")
    md.append("95 % bootstrap intervals over the items (differences inside them are noise):")
    md.append("")
    md.append("| task | items | base | general | task router |")
    md.append("|---|---|---|---|---|")

    def interval(config, task):
        s = by.get((config, task))
        if s is None or not s.get("interval"):
            return "–"
        lo, hi = s["interval"]
        return f"{100 * headline(s):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    for task in SEEN + UNSEEN:
        items = by[("base", task)]["items"] if ("base", task) in by else "–"
        md.append(f"| {TITLES[task]} | {items} | {interval('base', task)} | {interval('router:general', task)} "
                  f"| {interval(f'router:task-{task}', task)} |")
    md.append("")
    md.append("## Targets")
    md.append("")
    default = pack_default_router(a.pack)
    md.append(f"The pack's default routing is `router:{default}`. Targets: its mean ≥ 1.40 × base on the seen tasks and")
    md.append("≥ 1.55 × on the unseen ones, ≥ the best single skill (oracle) on each group's mean, no task below base beyond")
    md.append("its interval, no collapsed classifier among the default and the task routers, every task router ≥ `general`")
    md.append("on its task, ≥ 90 % top-1 on the free-form routing set, routing overhead ≤ 1.10.")
    md.append("")
    md.append("| group | router | mean | × base | target | vs best single skill (points) | vs uniform (points) |")
    md.append("|---|---|---|---|---|---|---|")
    order = [label for label, _ in routers]
    for label, group, target in [("seen", SEEN, 1.40), ("unseen", UNSEEN, 1.55)]:
        base, uniform, single = (group_mean(group, c) for c in ("base", "uniform", "best single skill"))
        for column in order:
            v = group_mean(group, column)
            if base is None or v is None:
                continue
            ratio = v / base if base else float("inf")
            verdict = "met" if ratio >= target else f"missed ({ratio:.2f} ×)"
            vs_single = "–" if single is None else f"{100 * (v - single):+.1f}"
            vs_uniform = "–" if uniform is None else f"{100 * (v - uniform):+.1f}"
            name = column.removeprefix("router ")
            md.append(f"| {label} | {name} | {100 * v:.1f} | {ratio:.2f} × | {target:.2f} ×: {verdict} | {vs_single} | {vs_uniform} |")
    md.append("")
    # Per task, for the default routing and every task router.
    checks = []
    below = []
    for task in SEEN + UNSEEN:
        d, b = by.get((f"router:{default}", task)), by.get(("base", task))
        if d and b and d.get("interval") and d["interval"][1] < headline(b):
            below.append(f"{TITLES[task]} ({100 * headline(d):.1f} [{100 * d['interval'][0]:.1f}, {100 * d['interval'][1]:.1f}] vs base {100 * headline(b):.1f})")
    checks.append(("no task below base beyond its interval (default)", not below, "; ".join(below) or "none"))
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
    user = os.path.join(a.work, "eval-user", "results.json")
    if os.path.exists(user):
        u = json.load(open(user))
        ub = {(r["config"], r["task"]): headline(r) for r in u}
        ucols = [c for c in ("base", "router:general", "router:general-top1") if any(k[0] == c for k in ub)]
        md.append("## The same items as users word them")
        md.append("")
        md.append("`eval --prompt-variant user`: each dev item asked in a user's words (no skill template uses them).")
        md.append("")
        md.append("| task | " + " | ".join(c.removeprefix("router:") for c in ucols) + " |")
        md.append("|---|" + "---|" * len(ucols))
        for task in SEEN + UNSEEN:
            md.append(f"| {TITLES[task]} | " + " | ".join(pct(ub.get((c, task))) for c in ucols) + " |")
        for label, group in [("mean of seen", SEEN), ("mean of unseen", UNSEEN)]:
            md.append(f"| **{label}** | " + " | ".join(pct(mean([ub.get((c, t)) for t in group])) for c in ucols) + " |")
        md.append("")
    freeform = os.path.join(a.work, "freeform.json")
    if os.path.exists(freeform):
        f = json.load(open(freeform))
        md.append("## Routing prompts written in users' own words")
        md.append("")
        md.append(f"`skillpack router accuracy --set {f.get('set', 'examples/routing/freeform.jsonl')}`: the router's top skill "
                  "is the skill the prompt was written for (hand-written prompts, none in any skill template).")
        md.append("")
        md.append("| router | features | top-1 | per skill (correct/prompts) |")
        md.append("|---|---|---|---|")
        for r in f["routers"]:
            per = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(r["per_skill"].items()))
            md.append(f"| {r['router']} | {r['features']} | {r['correct']}/{r['prompts']} ({100 * r['top1']:.0f} %) | {per} |")
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
        md.append("| router | features | features (ms) | weights applied (ms) | TTFT (ms) | ratio |")
        md.append("|---|---|---|---|---|---|")
        for r in b["routers"]:
            md.append(f"| {r['router']} | {r['features']} | {r['features_ms']:.1f} | {r['apply_ms']:.1f} | {r['ttft_ms']:.0f} | {r['ratio']:.3f} |")
        md.append("")
    md.append("Full table of every configuration (`eval/table.md` of the build):")
    md.append("")
    md.append(open(os.path.join(a.work, "eval", "table.md")).read())
    md.append("![headline metric per task and configuration](chart.svg)")
    md.append("")
    md.append("## How it was made")
    md.append("")
    md.append("```sh")
    raw = os.path.relpath(os.path.realpath(a.raw), os.path.realpath(os.getcwd()))
    md.append(f"RAW={raw} SEED={a.seed} EPOCHS={a.epochs} MAX_STEPS={a.max_steps} TARGETS={a.targets} scripts/build-medical-pack.sh")
    md.append("```")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md.append(f"Report written at commit {commit}; skills: AdaLoRA on {a.targets}, r 12 → 8, {a.epochs} epoch(s) within at most {a.max_steps} steps, best step by dev loss, seed {a.seed}.")
    md.append("")
    md.append("| stage | wall time (s) |")
    md.append("|---|---|")
    times = os.path.join(a.work, "stage-times.tsv")
    if os.path.exists(times):
        for line in open(times):
            name, secs = line.rstrip("\n").split("\t")
            md.append(f"| {name} | {secs} |")
    md.append("")
    total = sum(r["wall_s"] for r in results)
    md.append(f"Evaluation: {len(results)} task × configuration runs, {total:.0f} s summed over their own wall "
              f"times (`wall_s` in each summary; runs may have overlapped, one thread each, or run alone on two).")
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
