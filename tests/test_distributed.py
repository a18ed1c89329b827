"""Several processes (vigsm.distributed): the gpus params, the per-process batch, the shard merge, and, on
the tiny model with two gloo processes under torchrun, training and generation that equal one process's."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SYSTEM_PROMPT, shipped_params, tiny_params, write_params
from vigsm import distributed
from vigsm.config import SECTIONS, TrainParams, parse_section
from vigsm.errors import VigsmError


def _train_section(**over) -> dict:
    return {**tiny_params(Path("/nonexistent"))["train"], **over}


@pytest.mark.parametrize("value", [1, 2, 8, "auto"])
def test_gpus_accepts_an_integer_or_auto(value):
    assert parse_section("train", _train_section(gpus=value), TrainParams).gpus == value


@pytest.mark.parametrize("value", [0, -1, "all", "Auto", True, 1.5, None])
def test_gpus_rejects_anything_else_in_one_line(value):
    with pytest.raises(VigsmError) as err:
        parse_section("train", _train_section(gpus=value), TrainParams)
    assert str(err.value).startswith("params: train.gpus: ") and "\n" not in str(err.value)


def test_params_yaml_ships_one_process():
    doc = shipped_params()
    assert doc["train"]["gpus"] == 1 and doc["generate"]["gpus"] == 1


@pytest.mark.parametrize(("batch", "accumulation", "world", "expected"), [
    (12, 1, 2, (6, 1)),   # the shipped defaults on 2 GPUs: accumulation 1 cannot divide, the batch halves
    (12, 2, 2, (12, 1)),  # accumulation divides: each GPU keeps the batch one GPU fits
    (12, 4, 8, (6, 1)),   # both: accumulation by 4, the batch by the remaining 2
    (12, 3, 2, (6, 3)),
    (4, 1, 1, (4, 1)),
])
def test_split_batch_keeps_the_rows_per_step(batch, accumulation, world, expected):
    got = distributed.split_batch(batch, accumulation, world)
    assert got == expected
    assert got[0] * got[1] * world == batch * accumulation


def test_split_batch_that_does_not_divide_names_the_keys():
    with pytest.raises(VigsmError) as err:
        distributed.split_batch(12, 1, 8)
    msg = str(err.value)
    assert "train.gradient_accumulation_steps" in msg and "train.per_device_train_batch_size" in msg
    assert "train.gpus" in msg and "\n" not in msg


def test_per_process_train_divides_the_eval_batch_too():
    train_p = parse_section("train", _train_section(per_device_train_batch_size=12, per_device_eval_batch_size=12,
                                                 gradient_accumulation_steps=1, gpus=2), TrainParams)
    assert distributed.per_process_train(train_p, 1) is train_p
    two = distributed.per_process_train(train_p, 2)
    assert (two.per_device_train_batch_size, two.gradient_accumulation_steps, two.per_device_eval_batch_size) \
        == (6, 1, 6)


def test_auto_is_one_process_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert distributed.resolve_gpus("auto", "train.gpus") == 1
    assert distributed.resolve_gpus(1, "train.gpus") == 1
    assert distributed.resolve_gpus(2, "train.gpus") == 2  # gloo processes on the CPU, as the tests run


def test_outside_a_launcher_is_one_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert (distributed.is_worker(), distributed.world_size(), distributed.rank(), distributed.is_main()) \
        == (False, 1, 0, True)
    assert distributed.planned_world_size(3, "train.gpus") == 3
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "16")  # a multi-node torchrun: the launcher's world wins over gpus
    assert distributed.is_worker() and not distributed.is_main()
    assert distributed.planned_world_size(8, "train.gpus") == 16


def test_shards_merge_back_in_the_original_order():
    rows = [{"id": f"q{i}", "text": str(i)} for i in (5, 3, 9, 1, 7, 2, 8)]
    assert distributed.shard(rows, 1, 3) == [rows[1], rows[4]]  # strided: every world-th row
    for world in (1, 2, 3, 7, 9):
        shards = [distributed.shard(rows, r, world) for r in range(world)]
        assert sorted(len(s) for s in shards)[-1] - sorted(len(s) for s in shards)[0] <= 1  # even
        merged = distributed.merge_shards([r["id"] for r in rows], list(reversed(shards)))
        assert merged == rows
    with pytest.raises(VigsmError, match="two processes"):
        distributed.merge_shards(["q5"], [[rows[0]], [rows[0]]])
    with pytest.raises(VigsmError, match="q3 missing"):
        distributed.merge_shards(["q5", "q3"], [[rows[0]]])


def test_uneven_split_stops_before_launching(tmp_path):
    params = tiny_params(tmp_path, train={"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                                          "gpus": 3})
    write_params(tmp_path / "params.yaml", params)
    proc = subprocess.run(train_cmd(tmp_path, tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "train.gpus" in proc.stderr and "torch.distributed.run" not in proc.stdout


# --- two gloo processes under torchrun on the tiny model ---------------------------------------------------

def train_cmd(work: Path, data_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages" / "train.py"), "--data-dir", str(data_dir), "--adapter-dir",
            str(work / "adapter"), "--checkpoint-dir", str(work / "ckpt"), "--metrics", str(work / "train.json"),
            "--live-dir", str(work / "live"), "--params", str(work / "params.yaml")]


def run_params(model_dir: Path, gpus: int) -> dict:
    # 4 rows per optimiser step as params say for one GPU; on 2 processes, 2 rows each.
    return tiny_params(model_dir, train={"max_steps": 6, "save_steps": 2, "eval_steps": 2, "gpus": gpus,
                                         "load_best_model_at_end": False})


def tsv(path: Path) -> dict[int, float]:
    with open(path, encoding="utf-8") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh, delimiter="\t")}


def adapter(work: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(work / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    from vigsm.data import prepare

    out = tmp_path_factory.mktemp("prepared")
    params = tiny_params(tiny_model_dir)
    records, _ = prepare(parse_section("data", params["data"], SECTIONS["data"]), ROOT / "data" / "sample",
                         SYSTEM_PROMPT)
    for split, rows in records.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared, tiny_model_dir):
    """One run on 1 process and the same params on 2 gloo processes: (work dirs, stdout of each)."""
    runs, logs = {}, {}
    for gpus in (1, 2):
        work = tmp_path_factory.mktemp(f"train{gpus}")
        write_params(work / "params.yaml", run_params(tiny_model_dir, gpus))
        proc = subprocess.run(train_cmd(work, prepared), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[gpus], logs[gpus] = work, proc.stdout
    return runs, logs


EPS32 = 2.0 ** -23  # float32 machine epsilon (1.19e-7)


def reordering_bound(m: dict) -> float:
    """The relative gap that a different order of float32 additions may leave after one optimiser step.

    One process sums a step's loss and gradient over the N tokens of its rows; two processes each sum
    their half and gloo averages the halves, each half padded to its own length (so every matmul runs on
    another shape). Only the order of float32 additions changes. Summing N terms in another order moves the
    sum by at most (N - 1) u sum|x_i| (u = EPS32 / 2, Higham's recursive-summation bound), i.e. (N - 1) u
    relative for the non-negative token losses; the gradient's terms take their sign from the data, and
    Adam's division by each element's running RMS magnifies small elements, so allow twice that: N x EPS32
    per step. N is counted from above: rows per step x the longest training example (the metrics' own
    token counts).
    """
    return m["rows_per_step"] * m["train_tokens_max"] * EPS32


@pytest.mark.slow
def test_two_processes_learn_what_one_learns(trained):
    """Same rows per step (4 x 1 on one process, 2 x 1 on each of two): the loss curve, the eval losses and
    the adapter equal one process's up to float32 rounding, bounded by :func:`reordering_bound`.

    The gaps of successive steps add up (a few steps of a smooth descent, no chaotic growth), so after k
    steps the bound is k x the one-step bound: the logged loss and eval loss of step k, the train loss (a
    mean over steps, at most the last step's), and the adapter after the last step (Frobenius norm of the
    difference over all tensors, relative to the adapter's). Here: 4 rows x at most ~360 tokens, about
    1.7e-4 a step and 1e-3 after 6 steps. Measured on a 2-core CPU machine: losses up to 2.7e-5 relative
    (eval loss at step 6), adapter 1.9e-4 (the constant 1e-4 this replaces failed there, and at 1.15e-4 on
    the issue's machine). Learning something else is far outside: a second process that skips its first
    batch, or whose gradient is dropped (its loss still logged), left the adapter 0.69 and 0.73 apart and
    the losses 4e-4 to 2.3e-2 from step 2 on. (Step 1 alone could not tell: the random model's loss is
    about log(vocabulary) on any rows, 1.5e-4 apart on the skipped batch's rows.)
    """
    runs, logs = trained
    assert logs[2].count("[vigsm] backend=") == 2 and logs[1].count("[vigsm] backend=") == 1  # 2 processes ran
    m1, m2 = (json.loads((runs[g] / "train.json").read_text()) for g in (1, 2))
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["rows_per_step"] == m2["rows_per_step"] == 4 and m1["global_step"] == m2["global_step"] == 6
    step_bound = reordering_bound(m1)
    assert 1e-5 < step_bound < 1e-3  # the bound means something: far above eps, far below learning
    gaps = []
    # DVCLive numbers its rows with its own counter (training and eval logs share it): the i-th loss row is
    # logged after optimiser step i x logging_steps (1), the i-th eval row after step i x eval_steps (2).
    for name, every in (("loss.tsv", 1), ("eval/loss.tsv", 2)):
        c1, c2 = (list(tsv(runs[g] / "live" / "plots" / "metrics" / name).values()) for g in (1, 2))
        assert len(c1) == len(c2) == 6 // every
        for i, (x1, x2) in enumerate(zip(c1, c2, strict=True), 1):
            gaps.append((f"{name} step {i * every}", abs(x2 - x1) / abs(x1), i * every * step_bound))
    last = m1["global_step"]
    for key in ("eval_loss", "train_loss"):
        gaps.append((key, abs(m2[key] - m1[key]) / abs(m1[key]), last * step_bound))
    a, b = adapter(runs[1]), adapter(runs[2])
    assert a.keys() == b.keys()
    diff = sum(float((a[k] - b[k]).norm()) ** 2 for k in a) ** 0.5
    norm = sum(float(a[k].norm()) ** 2 for k in a) ** 0.5
    gaps.append(("adapter", diff / norm, last * step_bound))
    for name, gap, bound in gaps:
        print(f"[two processes] {name}: relative gap {gap:.3g}, bound {bound:.3g}")
    assert all(gap <= bound for _, gap, bound in gaps), [g for g in gaps if g[1] > g[2]]


@pytest.mark.slow
def test_only_the_main_process_writes(trained):
    """Rank 0 alone saves the adapter and metrics and reports; its outputs are the only files left."""
    runs, logs = trained
    wrote = [line for line in logs[2].splitlines() if " wrote " in line]
    assert wrote == [f"[vigsm] process 0 of 2 wrote {runs[2] / 'adapter'} and {runs[2] / 'train.json'}"]
    assert logs[2].count("[vigsm] eval_loss") == 1
    assert sorted(p.name for p in runs[2].iterdir()) == ["adapter", "live", "params.yaml", "train.json"]
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_two_processes_resume_after_a_kill(trained, prepared, tiny_model_dir, tmp_path):
    """SIGKILL the launcher and its workers after a checkpoint; the rerun under 2 processes resumes there
    and ends where the uninterrupted 2-process run ends (the one-process test's tolerance, 1e-4)."""
    runs, _ = trained
    work = tmp_path / "killed"
    work.mkdir()
    write_params(work / "params.yaml", run_params(tiny_model_dir, 2))
    proc = subprocess.Popen(train_cmd(work, prepared), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ckpt = time.time() + 600, work / "ckpt" / "checkpoint-2"
    # rank 1 writes its own RNG state, unsynchronised with rank 0's files: wait for both
    while time.time() < deadline and not all((ckpt / f).is_file() for f in ("trainer_state.json",
                                                                           "rng_state_1.pth")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the launcher, killed outright: its workers must not run on
    proc.wait()
    deadline = time.time() + 1.5  # the kernel kills them at once; orphans would train on for seconds
    while time.time() < deadline and processes_mentioning(str(work)):
        time.sleep(0.2)
    assert not processes_mentioning(str(work)), "workers outlived their launcher"
    assert not (work / "adapter").exists() and not (work / "train.json").exists()
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in ckpt.iterdir()}
    out = subprocess.run(train_cmd(work, prepared), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("[vigsm] resuming from") == 2  # both processes resumed
    m_ref, m = (json.loads((w / "train.json").read_text()) for w in (runs[2], work))
    assert m["resumed_from_step"] >= 2 and m["global_step"] == m_ref["global_step"] == 6
    assert m["eval_loss"] == pytest.approx(m_ref["eval_loss"], abs=1e-4)
    a, b = adapter(runs[2]), adapter(work)
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k


@pytest.mark.slow
def test_sharded_generation_merges_to_one_process_predictions(prepared, tiny_model_dir, tmp_path):
    """Greedy decoding of the test questions on 2 gloo processes, each its strided shard, merged in the test
    order: byte for byte the file one process writes, and no shard file is left behind."""
    outs = {}
    for gpus in (1, 2):
        work = tmp_path / f"gen{gpus}"
        work.mkdir()
        write_params(work / "params.yaml", tiny_params(tiny_model_dir, generate={"gpus": gpus, "batch_size": 4}))
        out = work / "pred.jsonl"
        proc = subprocess.run([sys.executable, str(ROOT / "stages" / "generate.py"), "--test",
                               str(prepared / "test.jsonl"), "--out", str(out), "--metrics", str(work / "m.json"),
                               "--params", str(work / "params.yaml")], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((work / "m.json").read_text())["processes"] == gpus
        assert sorted(p.name for p in work.iterdir()) == ["m.json", "params.yaml", "pred.jsonl"]
        outs[gpus] = out
    rows = [json.loads(line) for line in outs[1].read_text().splitlines()]
    test_ids = [json.loads(line)["id"] for line in (prepared / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == test_ids and len(rows) == 12
    assert outs[2].read_bytes() == outs[1].read_bytes()

    # A kill after rank 1 finished its shard: the rerun reuses that shard (found by the run's fingerprint)
    # and decodes only rank 0's. The shard is planted from the reference, so reuse is what makes it match.
    from vigsm.generation import fingerprint
    from vigsm.io import read_jsonl, write_jsonl

    work = tmp_path / "gen2"
    s = {k: parse_section(k, v, SECTIONS[k]) for k, v in
         yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8")).items()}
    mine = distributed.shard(read_jsonl(prepared / "test.jsonl"), 1, 2)
    done = distributed.shard_path(outs[2], fingerprint(s["model"], s["generate"], mine, None), 1, 2)
    write_jsonl(done, distributed.shard(rows, 1, 2))
    outs[2].unlink()
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "generate.py"), "--test",
                           str(prepared / "test.jsonl"), "--out", str(outs[2]), "--params", str(work / "params.yaml")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(6 resumed)" in proc.stdout and not done.exists()
    assert outs[2].read_bytes() == outs[1].read_bytes()
