#!/usr/bin/env python3
"""Writes the medical pack's REPORT.md (and copies the eval chart) from a build's outputs:
the eval results table (skillpack eval --all), per-stage wall times, data hashes and the exact
command and seeds. Called by scripts/build-medical-pack.sh as its last stage."""

import argparse
import hashlib
import json
import os
import shutil
import subprocess

SEEN = ["pubmedqa", "medqa", "medmcqa", "bc5cdr", "chemprot", "hoc"]
UNSEEN = ["healthver", "covidqa", "meqsum"]
TITLES = {
    "pubmedqa": "PubMedQA", "medqa": "MedQA", "medmcqa": "MedMCQA", "bc5cdr": "BC5CDR NER",
    "chemprot": "ChemProt", "hoc": "HoC", "healthver": "HealthVer", "covidqa": "COVID-QA",
    "meqsum": "MeQSum",
}


def headline(summary):
    return summary["metrics"][0][1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--seed", required=True)
    ap.add_argument("--steps", required=True)
    ap.add_argument("--targets", required=True)
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

    rows = []
    for task in SEEN + UNSEEN:
        base = score("base", task)
        uniform = score("uniform", task)
        singles = [(c, score(c, task)) for c in configs if c.startswith("skill:") and score(c, task) is not None]
        best_single = max(singles, key=lambda x: x[1]) if singles else (None, None)
        general = score("router:general", task)
        task_router = score(f"router:task-{task}", task)
        proto = score("router:prototype", task)
        embedding = score("router:general-embedding", task)
        rows.append((task, base, uniform, best_single, general, task_router, proto, embedding))

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def mean(vals):
        # A group mean only over complete columns: a partial mean would compare different tasks.
        return None if not vals or any(v is None for v in vals) else sum(vals) / len(vals)

    md = ["# Medical pack report (dev splits)", ""]
    md.append("| task | metric | base | uniform | best single skill | router (b) general | router (a) task | router (c) prototype | router (b) general-embedding |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    for task, base, uniform, (bs_name, bs), general, tr, proto, embedding in rows:
        metric = by[("base", task)]["metrics"][0][0] if ("base", task) in by else ""
        name = TITLES[task] + ("" if task in SEEN else " (unseen)")
        md.append(f"| {name} | {metric} | {pct(base)} | {pct(uniform)} | {pct(bs)} ({bs_name or '–'}) | {pct(general)} | {pct(tr)} | {pct(proto)} | {pct(embedding)} |")
    for label, group in [("mean of seen", SEEN), ("mean of unseen", UNSEEN)]:
        sub = [r for r in rows if r[0] in group]
        cols = [mean([r[i] for r in sub]) for i in (1, 2)]
        bs = mean([r[3][1] for r in sub])
        rest = [mean([r[i] for r in sub]) for i in (4, 5, 6, 7)]
        md.append(f"| **{label}** | | {pct(cols[0])} | {pct(cols[1])} | {pct(bs)} | {pct(rest[0])} | {pct(rest[1])} | {pct(rest[2])} | {pct(rest[3])} |")
    md.append("")
    md.append("Scores in percent on each task's dev items (200, or 100–150 for the generation tasks): at 200 items a 95 %")
    md.append("binomial interval is about ±7 points around 50 %, so differences of one or two points between")
    md.append("configurations are within noise. The best single skill is picked per task with the dev scores")
    md.append("themselves (an oracle choice, as a bound for routing).")
    md.append("")
    md.append("## Targets")
    md.append("")
    md.append("Routed ≥ +20 % relative over the base model on the mean of the seen tasks and ≥ +30 % on the")
    md.append("unseen ones, and ≥ the best single skill and ≥ the uniform mixture (means over the group):")
    md.append("")
    md.append("| group | router | mean | vs base | target | vs best single skill (points) | vs uniform (points) |")
    md.append("|---|---|---|---|---|---|---|")
    for label, group, target in [("seen", SEEN, 20.0), ("unseen", UNSEEN, 30.0)]:
        sub = [r for r in rows if r[0] in group]
        base = mean([r[1] for r in sub])
        uniform = mean([r[2] for r in sub])
        single = mean([r[3][1] for r in sub])
        for col, i in [("(b) general", 4), ("(b) general-embedding", 7), ("(a) task", 5), ("(c) prototype", 6)]:
            vals = [r[i] for r in sub]
            if base is None or any(v is None for v in vals):
                continue
            v = mean(vals)
            gain = 100 * (v / base - 1) if base else float("inf")
            verdict = "met" if gain >= target else f"missed by {target - gain:.1f} percentage points"
            vs_single = "–" if single is None else f"{100 * (v - single):+.1f}"
            vs_uniform = "–" if uniform is None else f"{100 * (v - uniform):+.1f}"
            # Per task: at least the best single skill (rounded as printed).
            ties = sum(1 for r in sub if r[3][1] is not None and round(1000 * r[i]) >= round(1000 * r[3][1]))
            md.append(f"| {label} | {col} | {100 * v:.1f} | {gain:+.1f} % | +{target:.0f} %: {verdict} | {vs_single} ({ties}/{len(sub)} tasks ≥) | {vs_uniform} |")
    md.append("")
    bench = os.path.join(a.work, "router-bench.json")
    if os.path.exists(bench):
        b = json.load(open(bench))
        md.append("## Routing overhead")
        md.append("")
        md.append(f"`skillpack router bench` on {b['prompts']} {TITLES.get(b['task'], b['task'])} prompts "
                  f"(mean {b['mean_prompt_tokens']:.0f} tokens), 2 threads: time to first token with routing ÷ without "
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
    md.append(f"RAW={raw} SEED={a.seed} STEPS={a.steps} TARGETS={a.targets} scripts/build-medical-pack.sh")
    md.append("```")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md.append(f"Commit {commit}; skills: AdaLoRA on {a.targets}, r 12 → 8, {a.steps} steps, seed {a.seed}.")
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
