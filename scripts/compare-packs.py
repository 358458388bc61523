#!/usr/bin/env python3
"""A README table comparing evaluations side by side: one column per LABEL=OUT:CONFIG, where OUT
is an `eval --all --out` folder (its results.json) and CONFIG one of its configurations (`base`,
`router:general-sparsemax`, ...). Each cell is the task's headline metric in percent with its
95 % interval; the last rows are the group means and their ratio to the first column of the same
model (given with --base-of LABEL=BASE_LABEL). Every column must cover the same items per task
(e.g. both evaluations with the same --limit), which the script checks.

  scripts/compare-packs.py \
    "SmolLM2 base=runs/medical/eval-100:base" \
    "SmolLM2 + pack=runs/medical/eval-100:router:general-sparsemax" \
    --base-of "SmolLM2 + pack=SmolLM2 base"
"""
import argparse
import json
import os
import sys

SEEN = ["pubmedqa", "medqa", "medmcqa", "bc5cdr", "chemprot", "hoc"]
UNSEEN = ["healthver", "covidqa", "meqsum"]
TITLES = {
    "pubmedqa": "PubMedQA", "medqa": "MedQA", "medmcqa": "MedMCQA", "bc5cdr": "BC5CDR NER",
    "chemprot": "ChemProt", "hoc": "HoC", "healthver": "HealthVer (unseen)",
    "covidqa": "COVID-QA (unseen)", "meqsum": "MeQSum (unseen)",
}


def column(spec):
    """`LABEL=OUT:CONFIG` -> (label, {task: summary})."""
    label, _, rest = spec.partition("=")
    out, _, config = rest.partition(":")
    if not (label and out and config):
        sys.exit(f"column `{spec}`: expected LABEL=OUT:CONFIG")
    path = os.path.join(out, "results.json")
    try:
        results = json.load(open(path))
    except OSError as e:
        sys.exit(f"{path}: {e.strerror}")
    results = results if isinstance(results, list) else results.get("results", [])
    by_task = {r["task"]: r for r in results if r["config"] == config}
    if not by_task:
        configs = sorted({r["config"] for r in results})
        sys.exit(f"{path}: no configuration `{config}` (has {', '.join(configs)})")
    return label, by_task


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("columns", nargs="+", help="LABEL=OUT:CONFIG")
    ap.add_argument("--base-of", action="append", default=[], help="LABEL=BASE_LABEL: ratio of group means")
    a = ap.parse_args()
    columns = [column(c) for c in a.columns]
    base_of = dict(b.split("=", 1) for b in a.base_of)
    for task in SEEN + UNSEEN:
        counts = {label: cells[task]["items"] for label, cells in columns if task in cells}
        if len(set(counts.values())) > 1:
            sys.exit(f"{task}: the columns cover different numbers of items: {counts}")

    def cell(summary):
        if summary is None:
            return "–"
        value = 100 * summary["metrics"][0][1]
        low, high = (100 * v for v in summary["interval"])
        return f"{value:.1f} [{low:.1f}, {high:.1f}]"

    def group_mean(cells, group):
        values = [100 * cells[t]["metrics"][0][1] for t in group if t in cells]
        return sum(values) / len(values) if len(values) == len(group) else None

    labels = [label for label, _ in columns]
    print("| task | items | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for task in SEEN + UNSEEN:
        items = next((cells[task]["items"] for _, cells in columns if task in cells), "–")
        metric = next((cells[task]["metrics"][0][0] for _, cells in columns if task in cells), "")
        print(f"| {TITLES[task]} ({metric}) | {items} | " + " | ".join(cell(cells.get(task)) for _, cells in columns) + " |")
    means = dict(columns)
    for name, group in [("mean of the 6 seen tasks", SEEN), ("mean of the 3 unseen tasks", UNSEEN)]:
        row = []
        for label, cells in columns:
            m = group_mean(cells, group)
            base = base_of.get(label)
            ratio = group_mean(means[base], group) if base in means else None
            text = "–" if m is None else f"{m:.1f}"
            if m is not None and ratio:
                text += f" ({m / ratio:.2f} ×)"
            row.append(f"**{text}**")
        print(f"| **{name}** | | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
