"""Assemble a results file in benchmarks/results/ from what the device returned (benchmarks/run_device.sh).

One subcommand per results file; each reads the raw files as the device wrote them (the raw archives
benchmarks/results/raw-*.tar.xz hold them: `tar xJf ARCHIVE -C /tmp`) and writes the JSON. Every figure
comes from those files; a missing measurement is null with the reason beside it.

defaults: issue 12's 2026-11-29-h200-defaults.json (modes `pipeline`, `defaults`, `gen3b`, `learning`,
`rows`, `base-paths`, `notebook768`). Its inputs:
  --defaults   h200-defaults.json (training as shipped against the notebook's baseline, interleaved)
  --earlier-defaults  the same benchmark from an earlier session, reported beside it (not pooled: each
               session's ratio compares runs interleaved on one machine)
  --pipeline   the pipeline mode's folder: h200-pipeline-stages.json, train.log (the step times quoted) and
               pipeline/ (train.json, generate*.json)
  --gen3b      the generate stage's metrics JSON of each run on the 3B-shaped random model
  --notebook-gen  the notebook's decoding (gpu_bench.py generate) of each run, interleaved with --gen3b's
               (mode `rows`); without it, the notebook's rate comes from --defaults or --earlier-defaults
  --notebook-768  the notebook's decoding at its own 768 new tokens (mode `notebook768`), reported beside
  --learning   the learning call's folder: train.json, generate*.json, stats.json, and score.json written by
               stages/score.py on the calling machine from the returned predictions
  --paths      h200-genpaths.json (static batch against the slot path on the fine-tuned SmolLM2)
  --stages     h200-learning-stages.json (wall seconds of each stage command)
  --base-paths h200-genpaths-base.json (the same paths on the base model: what the stop rules change there)
  --earlier-rows  an earlier session's device folder with the same rows (gen3b runs, h200-genpaths.json,
               the notebook's decoding in h200-defaults.json, learning/score.json), reported beside them
With D = raw-2026-11-29d/call3-pipeline-defaults, C = raw-2026-11-29c, E = raw-2026-11-29e unpacked in /tmp:

    python benchmarks/assemble.py defaults --defaults $D/h200-defaults.json \\
      --earlier-defaults $C/call1-defaults/h200-defaults.json --pipeline $D \\
      --gen3b $E/call1-2-rows/h200-gen3b-run{1,2,3}.json \\
      --notebook-gen $E/call1-2-rows/h200-notebook-gen-run{1,2,3}.json \\
      --notebook-768 $E/call5-notebook768/h200-notebook768-run{1,2}.json --learning $E/call1-2-rows/learning \\
      --paths $E/call1-2-rows/h200-genpaths.json --stages $E/call1-2-rows/h200-learning-stages.json \\
      --base-paths $E/call3-4-base-paths/h200-genpaths-base.json --earlier-rows $C \\
      --out benchmarks/results/2026-11-29-h200-defaults.json

x2: issue 15's 2026-11-29-h200x2.json from mode `x2` (nvidia-h200-x2). The x2 folder holds, for each round r
and GPU count g: train-g{g}-r{r}.json (the train stage's metrics), its log (the progress bar, whose per-step
timestamps give the steady rate after the first, compiling step), gen-g{g}-r{r}.json (the generate-base
stage's metrics) and, where they came back, the predictions base-g{g}-r{r}.jsonl (compared byte for byte).
The committed file's first note was given with --note; raw-2026-11-29d lacks the predictions (the
comparison in the committed file was made from the device's copy), so from the archive that list is empty:

    python benchmarks/assemble.py x2 /tmp/raw-2026-11-29d/call4-x2/x2 --note "..." \\
      --out benchmarks/results/2026-11-29-h200x2.json

decode: issue 21's results from mode `decode` (every figure the median of the rounds with its min, max and n;
the rounds ran interleaved). 2026-12-02-h200-steps.json (lookahead, adapter dtypes; the two calls' files put
in one folder, importtime.txt from the first call's logs beside them) and, from the day's first round,
2026-12-02-h200-steps-first.json (raw-2026-12-02.tar.xz; its notes were given with --note):

    python benchmarks/assemble.py decode /tmp/raw-decode --date 2026-12-02 --note "..." \\
      --out benchmarks/results/2026-12-02-h200-steps.json \\
      [--archive benchmarks/results/raw-2026-12-02-steps2.tar.xz]   (--archive packs RAW, for a new measurement)

rl: issue 22's 2026-12-02-h200-rl.json from modes `rl-install`, `rl-start`, `rl-watch`. The SFT and RL
predictions are scored here with stages/score.py (the device lacks rouge_score); the GRPO curve is read from
the rl stage's log (TRL prints one dict per logging step). The committed file's four notes were given with
--note; raw-2026-12-02-rl.tar.xz unpacks to out/ and chain.log:

    python benchmarks/assemble.py rl --chain /tmp/rl/out --note "..." --out benchmarks/results/2026-12-02-h200-rl.json
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import re
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---- shared readers and statistics -------------------------------------------------------------------------

def load(path: Path | None) -> dict | None:
    """A JSON file, or None when it was not given or did not come back."""
    return json.loads(path.read_text(encoding="utf-8")) if path and path.exists() else None


def write(out: Path, result: dict, ensure_ascii: bool = True) -> None:
    out.write_text(json.dumps(result, indent=1, ensure_ascii=ensure_ascii) + "\n", encoding="utf-8")


def spread(values: list[float], digits: int | None = None) -> dict | None:
    """Median with min and max of the runs, and n; rounded to ``digits`` if given; None when nothing was
    measured."""
    if not values:
        return None
    r = (lambda x: x) if digits is None else (lambda x: round(x, digits))
    return {"median": r(statistics.median(values)), "min": r(min(values)), "max": r(max(values)), "n": len(values)}


def bar_seconds(log: str, total: int) -> dict[int, int]:
    """When a tqdm bar of ``total`` steps (the training bar, told from evaluation bars by its length) first
    showed each step: elapsed seconds, 1 s resolution."""
    first: dict[int, int] = {}
    for m in re.finditer(rf"(\d+)/{total} \[(\d+):(\d+)<", log):
        first.setdefault(int(m.group(1)), int(m.group(2)) * 60 + int(m.group(3)))
    return first


def train_log_times(log: str, total: int) -> dict | None:
    """From a train stage's log: the first step (unsloth compiles its layers there), the evaluations' run
    times, and the seconds per step from step 1 to the last with the evaluations in between taken out;
    None without a bar or with fewer than 3 steps."""
    bar = bar_seconds(log, total)
    if total < 3 or 1 not in bar or total not in bar:
        return None
    evals = [float(x) for x in re.findall(r"'eval_runtime': '([\d.]+)'", log)]
    # an evaluation at the last step (or a final one) runs after the bar has shown it: not inside the interval
    last = re.search(rf"(?<!\d){total}/{total} \[", log).start()
    inside = [float(x) for x in re.findall(r"'eval_runtime': '([\d.]+)'", log[:last])]
    return {"first_step_seconds": bar[1], "eval_seconds": evals,
            "seconds_per_step": (bar[total] - bar[1] - sum(inside)) / (total - 1)}


# ---- defaults: issue 12 ------------------------------------------------------------------------------------

NOTEBOOK_GEN = "notebook-4bit-adapter-b20-sample"  # gpu_bench.NOTEBOOK_GEN (not imported: that pulls in torch)


def path_seconds(paths: dict | None) -> dict | None:
    """generation_paths.py's result: each path's seconds per round as median [min, max]."""
    return {k: spread(v["seconds"]) for k, v in paths["paths"].items()} if paths else None


def earlier_rows(folder: Path) -> dict:
    """An earlier session's measurements of the rows re-run by mode `rows`, from its device folder (the
    layout of raw-2026-11-29c): the 3B generate runs, the notebook's decoding runs, the generation paths and
    the learning check's delta."""
    gen3b = [load(p) for p in sorted(folder.glob("*/h200-gen3b-run*.json"))]
    nb = [r for p in folder.glob("*/h200-defaults.json") for r in load(p)["runs"]
          if r.get("path") == NOTEBOOK_GEN and "error" not in r]
    paths = next((load(p) for p in folder.glob("*/h200-genpaths.json")), None)
    score = next((load(p) for p in folder.glob("*/learning/score.json")), None)
    rate3b = spread([g["new_tokens_per_second"] for g in gen3b])
    rate_nb = spread([r["new_tokens_per_second"] for r in nb])
    return {
        "separate_adapter_rate_3b_new_tokens_per_second": rate3b,
        "notebook_generation_new_tokens_per_second": rate_nb,
        "notebook_generation_new_tokens": [r["new_tokens"] for r in nb],
        "notebook_generation_token_cap": [r["questions"] * r["max_new_tokens"] for r in nb],
        "separate_adapter_vs_notebook": round(rate3b["median"] / rate_nb["median"], 1) if rate3b and rate_nb else None,
        "generation_paths_seconds": path_seconds(paths),
        "learning_em_delta": score["delta"]["exact_match_flexible"] if score else None,
        "learning_em_mcnemar_p": score["delta"]["exact_match_flexible_mcnemar_p"] if score else None,
    }


def stop_rule_changes(paths: dict | None, base_paths: dict | None) -> dict | None:
    """What the stop rules (answer line, loops) change on real outputs, fine-tuned and base: the slot path
    with both rules off against it with them on (generation_paths.py's stop_rules_off_vs_on)."""
    keys = ("identical_texts", "answers_changed_strict", "answers_changed_flexible",
            "em_verdicts_changed_strict", "em_verdicts_changed_flexible", "em_strict", "em_flexible")
    out = {name: {k: run["stop_rules_off_vs_on"][k] for k in keys} | {
               k: run["paths"]["slots"][k] for k in ("stopped_at_answer", "stopped_as_loop", "stopped_at_eos")}
           for name, run in (("finetuned", paths), ("base", base_paths)) if run}
    return out or None


def cmd_defaults(args: argparse.Namespace) -> None:
    """Issue 12's results file (run_device.sh modes `pipeline`, `defaults`, `gen3b`, `learning`, `rows`)."""
    defaults = load(args.defaults)
    ds = defaults["summary"]
    gen3b = [load(p) for p in args.gen3b if p.exists()]
    train = load(args.learning / "train.json")
    gen_ft = load(args.learning / "generate.json")
    gen_base = load(args.learning / "generate-base.json")
    score = load(args.learning / "score.json")
    paths = load(args.paths)
    stages = load(args.stages)
    earlier = load(args.earlier_defaults)
    pipe_stages = load(args.pipeline / "h200-pipeline-stages.json") if args.pipeline else None
    names = ("train", "generate-base", "generate")
    pipe = {n: load(args.pipeline / "pipeline" / f"{n}.json") for n in names} if args.pipeline else {}
    pipe_total = round(sum(v["seconds"] for v in pipe_stages.values()), 2) if pipe_stages and all(
        v["rc"] == 0 for v in pipe_stages.values()) else None

    # the notebook's decoding: the runs interleaved with the 3B generate runs if given, else the defaults
    # benchmark's of this session or the earlier one
    nb_runs = [load(p) for p in args.notebook_gen if p.exists()]
    nb_rate = (spread([r["new_tokens_per_second"] for r in nb_runs]) if nb_runs else
               (ds.get(NOTEBOOK_GEN) or (earlier or {}).get("summary", {}).get(NOTEBOOK_GEN) or {}).get(
                   "new_tokens_per_second", {}))
    rate3b = spread([g["new_tokens_per_second"] for g in gen3b]) if gen3b else None
    # round by round when the two were interleaved (run i of each)
    pair_ratios = ([g["new_tokens_per_second"] / r["new_tokens_per_second"]
                    for g, r in zip(gen3b, nb_runs, strict=True)] if len(gen3b) == len(nb_runs) else [])
    nb768_runs = [load(p) for p in args.notebook_768 if p.exists()]
    nb768 = spread([r["new_tokens_per_second"] for r in nb768_runs])
    base_paths = load(args.base_paths)
    rows = earlier_rows(args.earlier_rows) if args.earlier_rows else None
    summary = {
        "default_train_speedup": ds.get("default_train_speedup"),
        "default_train_memory_ratio": ds.get("default_train_memory_ratio"),
        "default_train_speedup_pairwise": ds.get("pairwise_speedup"),
        "default_train_speedup_earlier_session": earlier["summary"].get("default_train_speedup") if earlier else None,
        "pipeline_total_seconds": pipe_total,
        "pipeline_stage_seconds": {k: v["seconds"] for k, v in pipe_stages.items()} if pipe_stages else None,
        "pipeline_train_tokens_per_second": pipe["train"]["train_tokens_per_second"] if pipe.get("train") else None,
        "real_generate_seconds": gen_ft["generate_seconds"] if gen_ft else None,
        "real_generate_waste": gen_ft.get("waste") if gen_ft else None,
        "learning_em_delta": score["delta"]["exact_match_flexible"] if score else None,
        "learning_em_mcnemar_p": score["delta"]["exact_match_flexible_mcnemar_p"] if score else None,
        "separate_adapter_rate_3b_new_tokens_per_second": rate3b,
        "notebook_generation_new_tokens_per_second": nb_rate or None,
        "separate_adapter_vs_notebook": (round(rate3b["median"] / nb_rate["median"], 1)
                                         if rate3b and nb_rate else None),
        "separate_adapter_vs_notebook_per_round": spread(pair_ratios),
        "notebook_generation_768_new_tokens_per_second": nb768,
        "separate_adapter_vs_notebook_768": round(rate3b["median"] / nb768["median"], 1) if rate3b and nb768 else None,
        "generation_paths_seconds": path_seconds(paths),
        "stop_rules_answers_changed": stop_rule_changes(paths, base_paths),
    }
    targets = {
        "default_train_speedup >= 4 at default_train_memory_ratio <= 1.0":
            None if summary["default_train_speedup"] is None else
            summary["default_train_speedup"] >= 4 and summary["default_train_memory_ratio"] <= 1.0,
        "pipeline_total_seconds <= 600": None if pipe_total is None else pipe_total <= 600,
        "real_generate_seconds <= 15": None if gen_ft is None else summary["real_generate_seconds"] <= 15,
        "real_generate_waste <= 0.25": None if gen_ft is None else summary["real_generate_waste"] <= 0.25,
        "separate adapter >= 100x the notebook's method": None if summary["separate_adapter_vs_notebook"] is None
        else summary["separate_adapter_vs_notebook"] >= 100,
        "learning_em_mcnemar_p < 0.01 with a positive delta": None if score is None else
            summary["learning_em_mcnemar_p"] < 0.01 and summary["learning_em_delta"] > 0,
    }
    tr = pipe.get("train") or {}
    train_log = args.pipeline / "train.log" if args.pipeline else None
    times = (train_log_times(train_log.read_text(errors="replace"), tr["global_step"])
             if tr and train_log.exists() else None)
    breakdown = (f": a {times['first_step_seconds']} s first step while unsloth compiles, then about "
                 f"{times['seconds_per_step']:.2f} s a step, {len(times['eval_seconds'])} evaluations of "
                 f"{min(times['eval_seconds']):.0f}-{max(times['eval_seconds']):.0f} s") if times else ""
    # seconds per step of the shipped defaults: the earlier session's window means, this session's median steps
    earlier_step = (statistics.median(r["seconds_per_step"] for r in earlier["runs"]
                                      if r.get("path") == "shipped-defaults" and "error" not in r)
                    if earlier else None)
    this_step = statistics.median(r["step_seconds_median"] for r in defaults["runs"]
                                  if r.get("path") == "shipped-defaults" and r.get("step_seconds_median"))
    # the training loop's rate that would bring the summed stages to 600 s, all else unchanged
    needed = (tr["train_tokens_this_run"] / (tr["train_wall_seconds"] - (pipe_total - 600))
              if tr and pipe_total and pipe_total > 600 else None)
    bt = ds["baseline-peft-bnb-notebook"]["tokens_per_second"]
    dt = ds["shipped-defaults"]["tokens_per_second"]
    notes = {
        "default_train_speedup": (
            f"{'met' if summary['default_train_speedup'] >= 4 else 'missed'} (target 4, stretch 6): median "
            f"{dt['median']:.0f} [{dt['min']:.0f}, {dt['max']:.0f}] tokens/s over {dt['n']} shipped-defaults runs "
            f"against {bt['median']:.0f} [{bt['min']:.0f}, {bt['max']:.0f}] over {bt['n']} baseline runs, "
            "interleaved in one session; each defaults window is "
            f"{defaults['runs'][1].get('steps_timed')} optimiser steps after 3 warm-up steps, each baseline window "
            f"{defaults['runs'][0].get('steps_timed')}. The per-step times (in the runs) show no recompilation "
            "outliers in the window, and the median-step rate gives "
            f"{ds.get('speedup_median_step')}x. "
            + (f"An earlier session's run of the same benchmark (25-step windows, only 2 defaults runs finished) "
               f"gave {earlier['summary']['default_train_speedup']}x: "
               f"{earlier['summary']['shipped-defaults']['tokens_per_second']['median']:.0f} against "
               f"{earlier['summary']['baseline-peft-bnb-notebook']['tokens_per_second']['median']:.0f} tokens/s. "
               f"Its defaults steps took about {earlier_step:.2f} s against {this_step:.2f} s here, on the same "
               "code and data; the cause "
               "(the machine, most likely) was not established, so both sessions are reported. "
               if earlier else "")
            + "Stretch 6x missed: without gradient checkpointing an earlier session measured 13,769 tokens/s, "
            "but at 2.9x the baseline's memory, which breaks the memory bound."),
        "pipeline_total_seconds": (
            None if pipe_total is None else
            f"{'met' if pipe_total <= 600 else f'missed by {pipe_total - 600:.0f} s'} (target 600, stretch 360): "
            "dvc.yaml's commands run in order on one H200 in one continuous run (no stage resumed), summed "
            "stage wall times; DVC's own hashing and caching are not included (no DVC on the device), and "
            "train ran without --live-dir (no dvclive there). The train stage alone took "
            f"{pipe_stages['train']['seconds']:.0f} s: {tr.get('global_step')} steps in "
            f"{tr.get('train_wall_seconds', 0):.0f} s of training ({tr.get('train_tokens_per_second', 0):.0f} "
            f"tokens/s over the whole run{breakdown}), the rest loading the 4-bit model and tokenizing. "
            f"Meeting 600 s needs the training loop at about {needed or 0:,.0f} "
            "tokens/s, which on this GPU means turning gradient "
            "checkpointing off (2.9x the baseline's memory, against the memory target); not measured as a "
            "pipeline."),
        "learning_check": ("one epoch instead of the notebook's two, to fit the session's device time; "
                           "scored on the CPU (stages/score.py) from the predictions the device returned"
                           + (f"; the earlier session's run gave delta {rows['learning_em_delta']:.3f}, p "
                              f"{rows['learning_em_mcnemar_p']:.2g}" if rows and rows.get("learning_em_delta")
                              else "")),
        "generation_paths": generation_paths_note(paths, rows, base_paths),
        "notebook_generation": notebook_note(nb_runs, gen3b, rows),
        "separate_adapter_vs_notebook": ratio_note(summary, rows),
        "stop_rules": stop_rules_note(summary["stop_rules_answers_changed"]),
        "notebook_generation_768": (f"{nb768['n']} runs after the others, on a fresh machine with the same 3B-shaped "
                                    "model and fresh adapter, batch 20, 20 questions x 768 new tokens, every row "
                                    "to the cap" if nb768 else None),
    }
    result = {
        "summary": summary, "targets_met": targets, "notes": notes,
        "train_defaults_vs_baseline": defaults,
        "train_defaults_vs_baseline_earlier_session": earlier,
        "pipeline_3b": {"model": "Qwen2.5-3B-shaped, random weights (gpu_bench.QWEN25_3B)",
                        "data": "vigsm.sample --train 7473 --test 1319",
                        "params": "params.yaml as shipped with data.source and model.name changed",
                        "stages": pipe_stages, **{k.replace("-", "_"): v for k, v in pipe.items()}},
        "generate_3b_separate_adapter": {"runs": gen3b, "new_tokens_per_second": rate3b,
                                         "notebook_runs": nb_runs, "notebook_new_tokens_per_second": nb_rate,
                                         "notebook_768_runs": nb768_runs},
        "learning_check": {"model": "SmolLM2-135M-Instruct (real weights, GGUF Q4_1 converted, trained in 4-bit)",
                           "data": "vigsm.sample --train 7473 --test 1319", "stage_seconds": stages,
                           "train": train, "generate_base": gen_base, "generate_finetuned": gen_ft,
                           "score": score},
        "generation_paths_finetuned_smollm2": paths,
        "generation_paths_base_smollm2": base_paths,
        "earlier_session_rows": rows,
    }
    write(args.out, result, ensure_ascii=False)
    for k, v in summary.items():
        print(f"{k}: {v}")
    for k, v in targets.items():
        print(f"target {k}: {'met' if v else 'MISSED' if v is False else 'not measured'}")


def _fmt(s: dict, digits: int = 0) -> str:
    return f"{s['median']:,.{digits}f} [{s['min']:,.{digits}f}, {s['max']:,.{digits}f}]"


def generation_paths_note(paths: dict | None, rows: dict | None, base_paths: dict | None) -> str | None:
    if not paths:
        return None
    p = paths["paths"]
    secs = path_seconds(paths)
    n = min(len(v["seconds"]) for v in p.values())
    note = (f"{n} rounds, each timing static, slots and slots-no-stop in turn, on the fine-tuned SmolLM2 of the "
            f"learning check ({paths['questions']} questions, greedy): static {_fmt(secs['static'], 2)} s, slots "
            f"{_fmt(secs['slots'], 2)} s, slots without stop rules {_fmt(secs['slots-no-stop'], 2)} s. The static "
            f"batch ran {p['static']['row_steps']:,} row-steps for {p['static']['new_tokens']:,} new tokens (waste "
            f"{p['static']['waste']:.2f}), the slot path none; every answer of this model ends at its end of turn "
            f"({p['slots']['stopped_at_eos']} of {paths['questions']}), so the static batch's waste is short rows "
            "waiting for the longest, which costs little time at this model's size: the slot path is not faster "
            "here; it gains where rows loop or run long, and it resumes per question.")
    if base_paths:
        b, bs = base_paths["paths"], path_seconds(base_paths)
        note += (f" On the base model ({bs['static']['n']} round, no adapter), where "
                 f"{b['slots']['stopped_as_loop']} of {base_paths['questions']} rows stop as loops: static "
                 f"{bs['static']['median']:.2f} s ({b['static']['row_steps']:,} row-steps), slots "
                 f"{bs['slots']['median']:.2f} s ({b['slots']['row_steps']:,}), slots without stop rules "
                 f"{bs['slots-no-stop']['median']:.2f} s ({b['slots-no-stop']['row_steps']:,}). There, with the "
                 f"rules off and {b['slots-no-stop']['hit_max_new_tokens']} rows running to the cap (the batch "
                 "keeps its size), the slot path's texts equal the static batch's for "
                 f"{base_paths['static_vs_slots_no_stop']['identical_texts']:.1%} of the questions.")
    if rows and rows.get("generation_paths_seconds"):
        e = rows["generation_paths_seconds"]
        note += (f" The earlier session's {e['static']['n']} rounds (a third was cut by the call's time limit): "
                 f"static {_fmt(e['static'], 2)} s, slots {_fmt(e['slots'], 2)} s.")
    return note


def notebook_note(nb_runs: list[dict], gen3b: list[dict], rows: dict | None) -> str | None:
    if not nb_runs:
        return None
    r = nb_runs[0]
    cap = r["questions"] * r["max_new_tokens"]
    note = (f"{len(nb_runs)} runs, interleaved with the {len(gen3b)} runs of the 3B generate stage (round i: "
            "generate, then the notebook's decoding), on the same 3B-shaped model and the same fresh r=32 "
            f"adapter: 4-bit base with the PEFT adapter on top, sampling, batch {r['batch']}, {r['questions']} "
            f"questions x {r['max_new_tokens']} new tokens (the notebook's 768 makes each run 6x longer; see "
            "notebook_generation_768 for 768); new tokens "
            f"{', '.join(format(x['new_tokens'], ',') for x in nb_runs)} of {cap:,}: every row decoded to the cap, as "
            "the 3B generate stage's rows do.")
    if rows and rows.get("notebook_generation_new_tokens"):
        toks = rows["notebook_generation_new_tokens"]
        note += (f" The earlier session's {len(toks)} runs ({_fmt(rows['notebook_generation_new_tokens_per_second'])}"
                 f" new tokens/s) used the adapter of a short training run, under which sampled rows ended early "
                 f"({', '.join(format(t, ',') for t in toks)} of {rows['notebook_generation_token_cap'][0]:,} new "
                 "tokens) while the batch kept stepping, so fewer new tokens per second; they were not "
                 "interleaved with the 3B generate runs either.")
    return note


def ratio_note(summary: dict, rows: dict | None) -> str | None:
    ratio, nb, g = (summary["separate_adapter_vs_notebook"], summary["notebook_generation_new_tokens_per_second"],
                    summary["separate_adapter_rate_3b_new_tokens_per_second"])
    if ratio is None:
        return None
    per_round = summary.get("separate_adapter_vs_notebook_per_round")
    note = (f"{'met' if ratio >= 100 else f'missed by {100 - ratio:.1f}x'} (target 100x): the generate stage's "
            f"{_fmt(g)} new tokens/s against the notebook's {_fmt(nb, 1)} gives {ratio}x (medians)")
    if per_round:
        note += f"; round by round {_fmt(per_round, 1)}x"
    nb768 = summary.get("notebook_generation_768_new_tokens_per_second")
    if nb768:
        note += (f". At the notebook's own 768 new tokens ({nb768['n']} later runs, not interleaved) it decodes "
                 f"{_fmt(nb768, 1)} new tokens/s, no slower than at 128 (likely its fixed cost per generate call "
                 f"spread over more tokens; not profiled): {summary['separate_adapter_vs_notebook_768']}x")
    note += (". Both decode every row to its cap on random weights, the best case for the notebook's static "
             "batches; real answers that end at different lengths cost the notebook's batches more (see "
             "notebook_generation) and the slot path nothing. The ratio comes from decoding 1319 rows a step "
             "from 16-bit weights against 20 from 4-bit ones; the static path this decoder replaced decoded "
             "faster per token in an earlier session (README, generation table; gpu_bench.py's harness, not "
             "interleaved with these runs), so the slot path's per-step bookkeeping may cost part of the "
             "margin; not profiled.")
    if rows and rows.get("separate_adapter_vs_notebook"):
        note += (f" The earlier session gave {rows['separate_adapter_vs_notebook']}x against a notebook run whose "
                 "rows ended early.")
    return note


def stop_rules_note(changes: dict | None) -> str | None:
    if not changes:
        return None
    parts = []
    for name, c in changes.items():
        parts.append(f"{name}: {c['stopped_as_loop']} rows stopped as loops and {c['stopped_at_answer']} at the "
                     f"answer line; texts identical {c['identical_texts']:.3f}; answers changed strict "
                     f"{c['answers_changed_strict']}, flexible {c['answers_changed_flexible']}; EM verdicts "
                     f"changed strict {c['em_verdicts_changed_strict']}, flexible "
                     f"{c['em_verdicts_changed_flexible']}")
    return ("The slot path with both stop rules off against it with them on, greedy, on SmolLM2's real "
            "weights. " + "; ".join(parts) + ". A row stopped as a loop gets its cycle repeated to the cap "
            "(vigsm.stopping.continue_cycle), so its text differs only where the model would have left the cycle.")


# ---- x2: issue 15 -----------------------------------------------------------------------------------------

def cmd_x2(args: argparse.Namespace) -> None:
    """Issue 15's results file from mode `x2`'s folder."""
    d = args.x2_dir
    runs: dict[str, list[dict]] = {"train": [], "generate": []}
    for f in sorted(d.glob("train-g*-r*.json")):
        g, r = re.match(r"train-g(\d+)-r(\d+)", f.stem).groups()
        m = json.loads(f.read_text())
        log = (d / f"{f.stem}.log").read_text(errors="replace") if (d / f"{f.stem}.log").exists() else ""
        times = train_log_times(log, m["global_step"])
        sps = times["seconds_per_step"] if times else None
        runs["train"].append({"gpus": int(g), "round": int(r), "tokens_per_second": m["train_tokens_per_second"],
                              "train_wall_seconds": m["train_wall_seconds"], "steps": m["global_step"],
                              "rows_per_step": m["rows_per_step"], "processes": m["processes"],
                              "peak_gpu_memory_gb": m["peak_gpu_memory_gb"], "steady_seconds_per_step": sps})
    for f in sorted(d.glob("gen-g*-r*.json")):
        g, r = re.match(r"gen-g(\d+)-r(\d+)", f.stem).groups()
        m = json.loads(f.read_text())
        runs["generate"].append({"gpus": int(g), "round": int(r), "questions": m["questions"],
                                 "generate_seconds": m["generate_seconds"], "load_seconds": m["load_seconds"],
                                 "new_tokens_per_second": m["new_tokens_per_second"], "processes": m["processes"],
                                 "forward_steps": m["forward_steps"],
                                 "peak_gpu_memory_gb": m["peak_gpu_memory_gb"]})

    def med(kind: str, g: int, key: str) -> dict | None:
        return spread([x[key] for x in runs[kind] if x["gpus"] == g and x[key] is not None])

    t1, t2 = med("train", 1, "tokens_per_second"), med("train", 2, "tokens_per_second")
    s1, s2 = med("train", 1, "steady_seconds_per_step"), med("train", 2, "steady_seconds_per_step")
    g1, g2 = med("generate", 1, "generate_seconds"), med("generate", 2, "generate_seconds")
    same = []
    for p1 in sorted(d.glob("base-g1-r*.jsonl")):
        p2 = d / p1.name.replace("-g1-", "-g2-")
        if p2.exists():
            a, b = p1.read_bytes(), p2.read_bytes()
            same.append({"round": p1.stem.split("-r")[-1], "byte_identical": a == b,
                         "sha256_1gpu": hashlib.sha256(a).hexdigest(), "sha256_2gpu": hashlib.sha256(b).hexdigest()})
    summary = {
        # the train stage's own tokens/s (every step, the first compiling one included)
        "ddp_train_scaling": round(t2["median"] / t1["median"], 3) if t1 and t2 else None,
        # the same steps after the first: one optimiser step of 12 rows on 1 GPU against 6 + 6 on 2
        "ddp_train_scaling_steady": round(s1["median"] / s2["median"], 3) if s1 and s2 else None,
        "ddp_generate_scaling": round(g1["median"] / g2["median"], 3) if g1 and g2 else None,
        "rounds": min(len([x for x in runs["train"] if x["gpus"] == 2]),
                      len([x for x in runs["generate"] if x["gpus"] == 2])),
        "train_tokens_per_second": {"1": t1, "2": t2},
        "train_steady_seconds_per_step": {"1": s1, "2": s2},
        "generate_seconds": {"1": g1, "2": g2},
        "predictions_2gpu_vs_1gpu": same,
    }
    targets = {f"{k} >= 1.8": None if summary[k] is None else summary[k] >= 1.8
               for k in ("ddp_train_scaling", "ddp_generate_scaling")}
    notes = list(args.note)
    if summary["rounds"] < 3:
        notes.append(f"{summary['rounds']} round(s), not the median of 3 the issue asks for: single runs, no spread.")
    if s1 and s2:
        notes.append(
            f"Training: after the first (compiling) step, one optimiser step of 12 rows took "
            f"{s1['median']:.2f} s on 1 GPU and {s2['median']:.2f} s as 6 + 6 rows on 2, so halving the rows "
            "per GPU did not shorten the step; the stage's own tokens/s also counts the first step, which took "
            "longer under 2 processes. Why the step does not shrink with its rows (fixed per-layer costs of the "
            "4-bit base and checkpointing, or the gradient all-reduce) was not profiled.")
    if g1 and g2:
        gen = [x for x in runs["generate"] if x["gpus"] == 1]
        steps = gen[0]["forward_steps"]  # decode steps of the 1-GPU run; both decode every row to the cap
        notes.append(
            f"Generation: {g1['median']:.1f} s on 1 GPU against {g2['median']:.1f} s on 2 (each decoding half the "
            f"questions); at {steps} decode steps that is {1000 * g1['median'] / steps:.0f} ms a step for "
            f"{gen[0]['questions']} rows and {1000 * g2['median'] / steps:.0f} ms for half of them: a decode "
            "step's time is far from proportional to its rows at these sizes. Loading (not counted) is the same "
            "on both.")
    result = {"summary": summary, "targets_met": targets, "notes": notes, "runs": runs,
              "command": "RUNS=1 bash benchmarks/run_device.sh x2 (kind nvidia-h200-x2; see its header)",
              "model": "Qwen2.5-3B-shaped, random weights (gpu_bench.QWEN25_3B), params.yaml as shipped but for "
                       "model.name, data.source (vigsm.sample 7473 / 1319), train.max_steps 40, train.eval_limit 48 "
                       "and the gpus keys"}
    write(args.out, result)
    print(json.dumps(summary, indent=1))


# ---- decode: issue 21 -------------------------------------------------------------------------------------

BINS = [(1024, 10**9), (512, 1023), (256, 511), (128, 255), (64, 127), (32, 63), (1, 31)]


def curve_bins(runs: list[dict]) -> dict:
    """ms per step against rows alive: the median step time of each bin of rows alive, over all rounds."""
    out = {}
    for lo, hi in BINS:
        ms = [c[2] for r in runs for c in r["curve"] if lo <= c[1] <= hi]
        if ms:
            out[f"{lo}-{hi if hi < 10**9 else 'max'}"] = {"median_ms": round(statistics.median(ms), 2),
                                                         "steps": len(ms)}
    return out


def decode_result(raw: Path, date: str, notes: list[str]) -> dict:
    """Issue 21's results from mode `decode`'s raw files. The summary's keys are the shipped path's (the raw
    ragged file names it; the first round's files, which predate the name, timed `static-graphs` as
    shipped); every other path's figures sit beside them under their own names."""
    res: dict = {"date": date, "device": None, "source": "benchmarks/run_device.sh decode",
                 "how": ("random-weight models (SmolLM2-135M shape; Qwen2.5-3B shape) in bfloat16 with a separate "
                         "LoRA adapter (r=32, 7 projections), 1,319 vigsm.sample prompts under the chat template, "
                         "params.yaml's generate section as shipped (greedy, stop rules, 768 new tokens, 1,319 "
                         "slots); answer lengths forced by tests/support/ragged.py (half <= 50 tokens, a tenth > "
                         "400, 6% to the cap); decode only (no loading) unless named; paths interleaved round by "
                         "round")}
    summary: dict = {}
    ragged_f = raw / "h200-decode-ragged.json"
    if ragged_f.is_file():
        r = json.loads(ragged_f.read_text())
        shipped = r.get("shipped_path", "static-graphs")
        res["device"] = r.get("device")
        res["versions"] = {"torch": r.get("torch"), "transformers": r.get("transformers")}
        res["ragged_schedule"] = r.get("schedule")
        res["shipped_path"] = shipped
        paths = {}
        for name, runs in (r.get("runs") or {}).items():
            paths[name] = {"seconds": spread([x["seconds"] for x in runs], 2),
                           "ms_per_step": spread([1000 * x["seconds"] / max(x["steps"], 1) for x in runs], 2),
                           "steps": runs[0]["steps"], "stats": runs[0]["stats"],
                           "host_stop_rules_and_tokenizer": runs[0]["host"], "step_curve": curve_bins(runs)}
        res["ragged_smollm2"] = paths
        for k in ("paths", "forced_texts_equal", "forced_texts_equal_to_slots_eager", "greedy_unforced_equality",
                  "reasons", "profile", "peak_gpu_memory_gb"):
            if k in r:
                res[k] = r[k]
        for name, p in paths.items():
            if not p["seconds"]:
                continue
            tail = "" if name == shipped else "_" + name.replace("-", "_")
            summary["ragged_generate_seconds" + tail] = p["seconds"]
            summary["decode_step_ms_smollm2" + tail] = p["ms_per_step"]
    cap_f = raw / "h200-decode-cap3b.json"
    if cap_f.is_file():
        c = json.loads(cap_f.read_text())
        res["cap_3b"] = {"rows": c["rows"], "max_new_tokens": c["max_new_tokens"],
                         "peak_gpu_memory_gb": c.get("peak_gpu_memory_gb")}
        if "runs" in c:  # one entry per path (the files of 2026-12-02's second round ran the shipped one first)
            shipped = c.get("shipped_path", next(iter(c["runs"])))
            for name, runs in c["runs"].items():
                if not runs:
                    continue
                res["cap_3b"][name] = {
                    "seconds": spread([x["seconds"] for x in runs], 2),
                    "ms_per_step": spread([1000 * x["seconds"] / max(x["stats"]["forward_steps"], 1)
                                           for x in runs], 2)}
                tail = "" if name == shipped else "_" + name.replace("-", "_")
                summary["cap_generate_seconds_3b" + tail] = res["cap_3b"][name]["seconds"]
        else:  # the first round's file: static graphs, and a short eager run
            res["cap_3b"].update({
                "static_seconds": spread([x["seconds"] for x in c["static"]], 2), "eager_steps": c["eager_steps"],
                "eager_seconds_short_run": spread([x["seconds"] for x in c["eager"]], 2),
                "eager_ms_per_step_at_all_rows": spread([statistics.median(y[2] for y in x["curve"])
                                                         for x in c["eager"] if x["curve"]], 2),
                "static_ms_per_step": spread([statistics.median(y[2] for y in x["curve"])
                                              for x in c["static"] if x["curve"]], 2)})
            if c["static"]:
                summary["cap_generate_seconds_3b"] = res["cap_3b"]["static_seconds"]
    loads = [json.loads(f.read_text()) for f in sorted(raw.glob("h200-decode-load-*.json"))]
    if loads:
        phases = {k: spread([x["phases"][k] for x in loads], 3) for k in loads[0]["phases"]}
        res["load_smollm2"] = {"phases_seconds": phases, "weights_file_mb": loads[0]["weights_file_mb"],
                               "what": "vigsm.modeling.load_with_adapter's steps in a fresh process, from a "
                                       "float32 safetensors directory (what vigsm.weights caches a GGUF as); "
                                       "the GGUF's digest and conversion are not in it"}
        summary["ragged_generate_load_seconds"] = spread([x["load_with_adapter_seconds"] for x in loads], 2)
    imports = raw / "importtime.txt"
    if imports.is_file():
        res["import_profile_top_cumulative_seconds"] = import_profile(imports.read_text(), 12)
    res["summary"] = summary

    def met(key: str, limit: float) -> bool | None:
        v = summary.get(key)
        return None if v is None else v["median"] <= limit

    res["targets"] = {"ragged_generate_seconds<=15": met("ragged_generate_seconds", 15),
                      "ragged_generate_seconds<=5 (stretch)": met("ragged_generate_seconds", 5),
                      "ragged_generate_load_seconds<=5": met("ragged_generate_load_seconds", 5),
                      "decode_step_ms_smollm2<=10": met("decode_step_ms_smollm2", 10),
                      "cap_generate_seconds_3b<=30": met("cap_generate_seconds_3b", 30)}
    res["notes"] = [
        *notes,
        "Profiled steps run under torch.profiler: compare their GPU kernel time and kernel counts, not their wall.",
        "Forced texts equal: forced tokens, so it checks lengths and stop reasons agree across the paths, not "
        "floating-point agreement of greedy choices; the unforced greedy comparison does that, on random weights.",
        "loading: the phases sum to load_with_adapter's work (imports included), from a float32 safetensors "
        "directory; the real stage's GGUF digest, 4-bit quantisation and dequantisation are not in it "
        "(bitsandbytes was not carried)."]
    res["not_measured"] = ["smollm2_train_tokens_per_second", "default_train_speedup", "pipeline_total_seconds",
                           "ddp_train_scaling", "ddp_generate_scaling (the 2-GPU kind is withheld)",
                           "the 3B's loading (4-bit bitsandbytes load and dequantisation)",
                           "real weights' texts (random weights here)"]
    return res


def import_profile(text: str, top: int) -> dict[str, float]:
    """The ``top`` largest cumulative times of a ``python -X importtime`` log, in seconds, by module."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))
    return {name: round(sec, 2) for sec, name in sorted(rows, reverse=True)[:top]}


def cmd_decode(args: argparse.Namespace) -> None:
    """Issue 21's results file from mode `decode`'s raw files."""
    res = decode_result(args.raw, args.date, args.note)
    write(args.out, res)
    if args.archive:
        with tarfile.open(args.archive, "w:xz") as tar:
            for f in sorted(args.raw.iterdir()):
                tar.add(f, arcname=f"raw-decode/{f.name}")
    print(json.dumps({"summary": res["summary"], "targets": res["targets"]}, indent=1))


# ---- dtypes: issue 21, the adapter's dtype on real answers --------------------------------------------------

def cmd_dtypes(args: argparse.Namespace) -> None:
    """generate.adapter_dtype on real answers, from the rl chain's out/ folder run with ADAPTER_DTYPES="float32
    compute": the SFT adapter's predictions with each dtype (adapter-<dtype>/), scored here with
    stages/score.py (float32 as "base", compute as "finetuned", so the paired delta is compute minus
    float32, with McNemar's p on the flexible EM verdicts), identical texts and strict answers
    (agreement.py), and each generate stage's own timing (metrics/generate.json, one run each)."""
    import yaml
    from agreement import compare
    from transformers import AutoTokenizer

    from vigsm.io import read_jsonl

    c = args.chain
    f32, comp = c / "adapter-float32", c / "adapter-compute"
    work = args.work / "dtypes"
    scores = score_files({"base": f32 / "finetuned.jsonl", "finetuned": comp / "finetuned.jsonl"},
                         c / "test.jsonl", c / "params.yaml", work)
    params = yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    texts = [{r["id"]: r["raw"] for r in read_jsonl(d / "finetuned.jsonl")} for d in (comp, f32)]
    agree = compare(*texts, lambda t: tok(t, add_special_tokens=False)["input_ids"], 64)
    per_q = {name: {r["id"]: r["correct_flexible"] for r in read_jsonl(work / "per_question" / f"{name}.jsonl")}
             for name in ("base", "finetuned")}
    flips = {"float32_right_compute_wrong": sum(per_q["base"][q] and not per_q["finetuned"][q] for q in per_q["base"]),
             "compute_right_float32_wrong": sum(per_q["finetuned"][q] and not per_q["base"][q] for q in per_q["base"])}
    d = scores["delta"]
    gen = {dt: load(c / f"adapter-{dt}" / "generate.json") for dt in ("float32", "compute")}
    result = {
        "issue": 21,
        "what": "generate.adapter_dtype float32 (shipped) against compute, on SmolLM2-135M-Instruct's real weights "
                "(bfloat16 base) with an SFT adapter, vigsm.sample's 1319 test questions, params.yaml's generate "
                "section as shipped otherwise; the generate stage as dvc.yaml runs it, once per dtype",
        "summary": {"identical_texts": agree["identical_texts"], "questions": agree["questions"],
                    "same_strict_answer": agree["same_strict_answer"],
                    "em_flexible_float32": scores["base"]["exact_match_flexible"],
                    "em_flexible_compute": scores["finetuned"]["exact_match_flexible"],
                    "em_delta_compute_minus_float32": {"delta": d["exact_match_flexible"],
                                                      "lo": d["exact_match_flexible_lo"],
                                                      "hi": d["exact_match_flexible_hi"]},
                    "em_mcnemar_p": d["exact_match_flexible_mcnemar_p"], "em_verdict_flips": flips,
                    "generate_seconds": {dt: (g or {}).get("generate_seconds") for dt, g in gen.items()},
                    "load_seconds": {dt: (g or {}).get("load_seconds") for dt, g in gen.items()}},
        "agreement": agree, "generate": gen, "params": {k: params[k] for k in ("model", "lora", "train", "generate")},
        "score": scores, "notes": [*args.note, "Timings are one run each (the generate stage's own figures), not "
                                            "interleaved rounds: they say how long the stage took, not a ranking."],
    }
    write(args.out, result)
    if args.archive:
        with tarfile.open(args.archive, "w:xz") as tar:
            tar.add(c, arcname=f"raw-dtypes/{c.name}")
    print(json.dumps(result["summary"], indent=1))


# ---- rl: issue 22 ------------------------------------------------------------------------------------------

_LOG_DICT = re.compile(r"\{'loss'[^{}]*\}")
CURVE_KEYS = ("reward", "reward_std", "rewards/correct/mean", "rewards/format_reward/mean", "groups_any_correct",
              "completions/mean_length", "completions/clipped_ratio", "kl", "entropy", "step_time", "grad_norm")


def reward_curve(log_text: str) -> list[dict]:
    """One row per logged GRPO step from the rl stage's console log (tqdm's carriage returns included):
    the dicts TRL's trainer prints, their values as floats."""
    rows = []
    for m in _LOG_DICT.finditer(log_text):
        try:
            d = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError):
            continue
        if "reward" not in d:
            continue
        row = {}
        for k in CURVE_KEYS:
            if k in d:
                try:
                    value = float(d[k])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):  # the results file stays strict JSON
                    row[k] = value
        rows.append(row)
    for i, r in enumerate(rows, 1):
        r["step"] = i
    return rows


def score_predictions(chain: Path, work: Path, run: Path | None = None) -> dict:
    """stages/score.py on the returned predictions (finetuned and base from the chain folder, rl from ``run``,
    a per-learning-rate subfolder, or the chain folder), under the run's params.yaml; keys added to params.yaml
    since the run (score checks every section strictly) are filled in as shipped now, so an older run still
    scores, with its own values wherever it has them."""
    run = run or chain
    files = {"base": chain / "base.jsonl", "finetuned": chain / "finetuned.jsonl", "rl": run / "rl.jsonl"}
    return score_files({name: f for name, f in files.items() if f.is_file() and f.stat().st_size},
                       chain / "test.jsonl", run / "params.yaml", work)


def score_files(files: dict[str, Path], test: Path, run_params: Path, work: Path) -> dict:
    """stages/score.py on ``files`` (variant name -> predictions) in ``work``, under ``run_params`` with the
    keys added to params.yaml since (as shipped now); return its metrics (per-question verdicts in
    ``work/per_question/<variant>.jsonl``)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for section, keys in yaml.safe_load(run_params.read_text(encoding="utf-8")).items():
        params.setdefault(section, {}).update(keys)
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "stages/score.py"), "--test", str(test),
                    "--predictions", *(f"{name}={f}" for name, f in files.items()), "--metrics",
                    str(work / "score.json"), "--details", str(work / "score-details.json"), "--per-question-dir",
                    str(work / "per_question"), "--report", str(work / "report.md"), "--params",
                    str(work / "params.yaml")], check=True)
    return json.loads((work / "score.json").read_text())


def rl_run(chain: Path, run: Path, work: Path) -> dict:
    """One RL run of the chain (``run``: its folder, with rl.log, rl.json, rl-stage.json, rl.jsonl, params.yaml):
    scored against the chain's SFT predictions, its curve, and the issue's keys."""
    import yaml

    scores = score_predictions(chain, work, run)
    rl = load(run / "rl.json") or {}
    fallback = load(run / "rl-fallback.json")
    curve = reward_curve((run / "rl.log").read_text(encoding="utf-8", errors="replace"))
    params = json.loads(json.dumps(yaml.safe_load((run / "params.yaml").read_text())))
    d = scores["delta_rl"]
    steps = [r["step_time"] for r in curve if "step_time" in r]
    rows = params["rl"]["prompts_per_step"] * params["rl"]["num_generations"]
    # Without the stage's own metrics (stopped at the budget), the rollout rate's lower bound: completion
    # tokens over the whole step time (rollouts, rewards, forward and backward).
    timed = [r for r in curve if "step_time" in r and "completions/mean_length" in r]
    bound = (sum(r["completions/mean_length"] * rows for r in timed) / sum(r["step_time"] for r in timed)
             if timed else None)
    summary = {
        "rl_em_delta_vs_sft": {"delta": d["exact_match_flexible"], "lo": d["exact_match_flexible_lo"],
                               "hi": d["exact_match_flexible_hi"]},
        "rl_em_mcnemar_p": d["exact_match_flexible_mcnemar_p"],
        "rl_step_seconds": rl.get("step_seconds_median", statistics.median(steps) if steps else None),
        "rl_rollout_tokens_per_second": rl.get("rollout_tokens_per_second", bound),
        "rl_rollout_tokens_per_second_is": "measured in generate (metrics/rl.json)" if "rollout_tokens_per_second" in rl
        else "a lower bound: completion tokens over whole step times (the stage stopped before writing its metrics)",
        "rl_total_seconds": (load(run / "rl-stage.json") or {}).get("seconds"),
        "sft_em_flexible": scores["finetuned"]["exact_match_flexible"],
        "rl_em_flexible": scores["rl"]["exact_match_flexible"],
        "rl_steps_done": rl.get("steps", len(curve)),
        "rl_steps_in_scored_adapter": rl.get("steps") or (int(fallback["checkpoint"].rsplit("-", 1)[1]) if fallback
                                                           else len(curve)),
    }
    return {"summary": summary, "rl_params": params["rl"], "params": params, "stopped_at_budget": fallback,
            "rl_stage": load(run / "rl-stage.json"), "rl": rl, "score": scores, "reward_curve": curve,
            "beats_sft": d["exact_match_flexible"] > 0 and d["exact_match_flexible_mcnemar_p"] < 0.05}


def cmd_rl(args: argparse.Namespace) -> None:
    """Issue 22's results file from mode `rl`'s chain folder: the SFT and RL predictions scored here with
    stages/score.py (the device lacks rouge_score), the GRPO curve read from the rl stage's log (TRL prints
    one dict per logging step), and the summary keys the issue asks for. A chain with one subfolder per
    learning rate (lr<rate>/) gives one entry per run; the headline is the run at params.yaml's shipped
    rl.learning_rate (--headline picks another), never the best one picked after the fact."""
    import yaml

    c = args.chain
    runs_dirs = sorted(p for p in c.iterdir() if p.is_dir() and p.name.startswith("lr")) or [c]
    runs = {p.name: rl_run(c, p, args.work / p.name) for p in runs_dirs}
    shipped_lr = yaml.safe_load((ROOT / "params.yaml").read_text())["rl"]["learning_rate"]
    headline = args.headline or next((n for n, r in runs.items() if float(r["rl_params"]["learning_rate"])
                                      == float(shipped_lr)), next(iter(runs)))
    head = runs[headline]
    result = {
        "issue": 22,
        "what": "SmolLM2-135M-Instruct (real weights, bfloat16) on vigsm.sample 7473/1319: SFT, then GRPO (TRL "
                "GRPOTrainer, the rl stage as dvc.yaml runs it), both adapters generating the test split greedily",
        "summary": {**head["summary"], "headline_run": headline},
        # Several runs tried: the headline's p counts once per run looked at (Bonferroni), as the notes say.
        "target_met": {"rl beats sft with p < 0.05": head["beats_sft"],
                       "the same, corrected for the runs tried (Bonferroni)": head["beats_sft"]
                       and head["summary"]["rl_em_mcnemar_p"] * len(runs) < 0.05},
        "params": {k: head["params"][k] for k in ("model", "lora", "train", "rl", "generate")},
        "notes": args.note,
        "rollout_engines": load(c / "rollouts.json"),
        "stages": load(c / "stages.json"),
        "train": load(c / "train.json"),
        "runs": {n: {k: v for k, v in r.items() if k != "params"} for n, r in runs.items()},
    }
    write(args.out, result)
    print(json.dumps({n: r["summary"] for n, r in runs.items()}, indent=1))
    if result["rollout_engines"]:
        print(json.dumps(result["rollout_engines"]["summary"], indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="results", required=True)
    d = sub.add_parser("defaults", help="issue 12: training defaults, pipeline, 3B decoding, learning check")
    d.add_argument("--defaults", type=Path, required=True)
    d.add_argument("--earlier-defaults", type=Path)
    d.add_argument("--pipeline", type=Path)
    d.add_argument("--gen3b", type=Path, nargs="*", default=[])
    d.add_argument("--learning", type=Path, required=True)
    d.add_argument("--paths", type=Path)
    d.add_argument("--stages", type=Path)
    d.add_argument("--notebook-gen", type=Path, nargs="*", default=[])
    d.add_argument("--notebook-768", type=Path, nargs="*", default=[])
    d.add_argument("--base-paths", type=Path)
    d.add_argument("--earlier-rows", type=Path)
    d.set_defaults(run=cmd_defaults)
    x = sub.add_parser("x2", help="issue 15: the train and generate-base stages on 1 and 2 GPUs")
    x.add_argument("x2_dir", type=Path)
    x.add_argument("--note", action="append", default=[], help="a sentence on how the runs were made")
    x.set_defaults(run=cmd_x2)
    c = sub.add_parser("decode", help="issue 21: ragged decoding, the 3B cap rounds, loading")
    c.add_argument("raw", type=Path)
    c.add_argument("--archive", type=Path, help="also pack RAW into this .tar.xz (a new measurement)")
    c.add_argument("--date", required=True, help="the measurement's date (YYYY-MM-DD)")
    c.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    c.set_defaults(run=cmd_decode)
    r = sub.add_parser("rl", help="issue 22: SFT then GRPO on SmolLM2, scored here")
    r.add_argument("--chain", type=Path, required=True, help="the chain's returned out/ folder")
    r.add_argument("--work", type=Path, default=Path("/tmp/rl-score"), help="where score.py writes")
    r.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    r.add_argument("--headline", help="the run (lr<rate> folder) the summary gives; default: the shipped rate")
    r.set_defaults(run=cmd_rl)
    t = sub.add_parser("dtypes", help="issue 21: generate.adapter_dtype float32 against compute on real answers")
    t.add_argument("--chain", type=Path, required=True, help="the rl chain's returned out/ folder")
    t.add_argument("--tokenizer", required=True, help="SmolLM2's tokenizer files (for the shared-token count)")
    t.add_argument("--work", type=Path, default=Path("/tmp/rl-score"), help="where score.py writes")
    t.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    t.add_argument("--archive", type=Path, help="also pack the chain folder into this .tar.xz")
    t.set_defaults(run=cmd_dtypes)
    for p in (d, x, c, r, t):
        p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
