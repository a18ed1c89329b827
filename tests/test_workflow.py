"""The researcher's workflow on the tiny model: a queued sweep, remote storage round trips (local
directory and S3 through a local moto server), exporting a merged model, and asking the model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from conftest import reproduced_project, run, tiny_params

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    return reproduced_project(tmp_path_factory.mktemp("workflow"), tiny_params(tiny_model_dir), "trained")


def test_queued_sweep(trained):
    run([*DVC, "exp", "run", "--queue", "-S", "lora.r=2,8"], trained)
    run([*DVC, "queue", "start", "-j", "1"], trained)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run([*DVC, "queue", "status"], trained).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    if "Failed" in status:  # show why: each failed task's own log (its first column names it)
        logs = [run([*DVC, "queue", "logs", line.split()[0]], trained, check=False)
                for line in status.splitlines() if "Failed" in line]
        pytest.fail(status + "".join(p.stdout[-3000:] + p.stderr[-2000:] for p in logs))
    shown = json.loads(run([*DVC, "exp", "show", "--json"], trained).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    rs = set()
    for e in exps:
        for run_ in e.get("revs", []):
            data = run_.get("data") or {}
            r = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("lora", {}).get("r")
            em = data.get("metrics", {}).get("metrics/score.json", {}).get("data", {}).get("finetuned", {})
            if r is not None and "exact_match_flexible" in em:
                rs.add(r)
    assert {2, 8} <= rs, json.dumps(shown)[:2000]
    run([*DVC, "queue", "stop"], trained, check=False)


def _greedy(model_dir: Path, adapter: Path | None, merged: Path | None = None) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = merged or model_dir
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in ("Lan có 2 cây bút, mua thêm 1 cây. Có bao nhiêu?", "5 + 7 = ?")]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:])


def _logits(model_dir: Path, adapter: Path | None = None):
    """float32 logits of one teacher-forced chat batch (plain transformers + PEFT, not vigsm's loader)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    text = tok.apply_chat_template([{"role": "user", "content": "Lan có 2 cây bút, mua thêm 1 cây. Có bao nhiêu?"},
                                    {"role": "assistant", "content": "2 + 1 = 3\n### 3"}], tokenize=False)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model.eval()(**enc).logits


def test_export_merged_matches_base_plus_adapter(trained, tiny_model_dir, tmp_path):
    """The merged model computes base + adapter, and the adapter matters: an export that dropped it, or
    merged it with the wrong scale, fails on the logits even where greedy texts happen to agree."""
    import torch

    out = tmp_path / "merged"
    # --adapter omitted: export takes the train stage's adapter directory from dvc.yaml.
    run([sys.executable, "-m", "vigsm.export", "--out", str(out)], trained)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    umask = os.umask(0)
    os.umask(umask)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in out.iterdir() if f.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors alone would leave its file 0600
    adapter = trained / "models" / "adapter"
    base, with_adapter, merged = _logits(tiny_model_dir), _logits(tiny_model_dir, adapter), _logits(out)
    effect = (with_adapter - base).abs().max().item()
    assert effect > 1e-2, f"the trained adapter barely changes the logits ({effect:.2e}); the test cannot see it"
    assert torch.allclose(merged, with_adapter, atol=effect * 1e-3, rtol=0), (merged - with_adapter).abs().max()
    assert _greedy(tiny_model_dir, None, merged=out) == _greedy(tiny_model_dir, adapter)


def test_dequantised_4bit_base_merges_the_adapter(trained, tiny_model_dir):
    """The export path for a 4-bit base: vigsm.modeling.dequantize_to_16bit turns each NF4 layer back into
    a dense one holding exactly bitsandbytes' dequantised weights, and the adapter merged on top computes
    the same as the adapter kept separate. The base is quantised here by hand, on the CPU:
    ``load_with_adapter`` itself refuses 4-bit loading without CUDA (the GPU tier covers that part)."""
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes (the test extra) is not installed")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vigsm.modeling import dequantize_to_16bit

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = {}
    for name, module in list(model.model.layers.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False, quant_type="nf4",
                                      compute_dtype=torch.float32)
                q.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type="nf4").to("cpu")
                expected[f"{name}.{child_name}".lstrip(".")] = (
                    bnb.functional.dequantize_4bit(q.weight.data, q.weight.quant_state), child.weight.data.clone())
                setattr(module, child_name, q)
    assert len(expected) == 2 * 7  # every projection of both layers is NF4 now
    dequantize_to_16bit(model, torch.float32)
    layers = dict(model.model.layers.named_modules())
    for name, (nf4, original) in expected.items():
        layer = layers[name]
        assert type(layer) is torch.nn.Linear, name
        assert torch.equal(layer.weight.data, nf4), name  # bitsandbytes' dequantised weights, exactly
        assert not torch.equal(layer.weight.data, original), name  # ...which are not the float32 ones
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = tok("Lan có 2 cây bút, mua thêm 1 cây.", return_tensors="pt")
    peft_model = PeftModel.from_pretrained(model, str(trained / "models" / "adapter")).eval()
    with torch.inference_mode():
        separate = peft_model(**enc).logits
        with peft_model.disable_adapter():
            without = peft_model(**enc).logits
        merged = peft_model.merge_and_unload()(**enc).logits
    effect = (separate - without).abs().max().item()
    assert effect > 1e-2
    assert torch.allclose(merged, separate, atol=effect * 1e-3, rtol=0)


def test_ask_streams_and_extracts(trained, monkeypatch):
    from vigsm.answers import extract_answer
    from vigsm.ask import ask

    question = "Lan có 2 cây bút. Có bao nhiêu?"
    proc = run([sys.executable, "-m", "vigsm.ask", "--max-new-tokens", "8", question], trained)
    # The CLI streams the greedy text, then the answer extracted from exactly that text: the same text and
    # answer that ask() returns for the same question, adapter and params.
    streamed, sep, printed = proc.stdout.rpartition("\n=> final answer: ")
    monkeypatch.chdir(trained)
    text, answer = ask(question, max_new_tokens=8, stream=False)
    assert sep and streamed.strip() == text.strip(), proc.stdout
    assert answer == extract_answer(text, strict=False)
    assert printed.strip() == (answer if answer is not None else "(none found)"), proc.stdout
    by_rev = run([sys.executable, "-m", "vigsm.ask", "--rev", "HEAD", "--max-new-tokens", "8",
                  "Lan có 2 cây bút. Có bao nhiêu?"], trained)
    assert by_rev.stdout == proc.stdout  # the same adapter and params, read through DVC at HEAD


def _push_clone_pull_regenerate(project: Path, tmp_path: Path, env: dict | None = None) -> None:
    """With a default remote configured and committed: push, clone afresh (no cache, no outputs), pull,
    and rerun generate alone from the pulled adapter; its greedy predictions must be byte-identical."""
    run([*DVC, "push"], project, env=env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models" / "adapter").exists()
    run([*DVC, "pull"], clone, env=env)
    assert (clone / "models" / "adapter" / "adapter_model.safetensors").is_file()
    status = run([*DVC, "status"], clone, env=env).stdout
    assert "up to date" in status, status
    out = run([*DVC, "repro", "--force", "--single-item", "generate"], clone, env=env).stdout
    assert "Running stage 'train'" not in out
    assert (clone / "data/predictions/finetuned.jsonl").read_bytes() == (
        project / "data/predictions/finetuned.jsonl").read_bytes(), "the pulled adapter must reproduce the output"
    run([*DVC, "repro", "score"], clone, env=env)


def test_local_remote_round_trip(trained, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(trained, project, symlinks=True)
    run([*DVC, "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    run(["git", "add", ".dvc/config"], project)
    run(["git", "commit", "-qm", "remote"], project)
    _push_clone_pull_regenerate(project, tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_remote_round_trip(trained, tmp_path):
    """Push to S3 (a moto server on localhost), clone, pull with credentials from the environment."""
    pytest.importorskip("dvc_s3")
    server_mod = pytest.importorskip("moto.server")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="vigsm")
        project = tmp_path / "p"
        shutil.copytree(trained, project, symlinks=True)
        # The endpoint goes to the committed config; credentials only to the git-ignored config.local.
        run([*DVC, "remote", "add", "-d", "store", "s3://vigsm/cache"], project)
        run([*DVC, "remote", "modify", "store", "endpointurl", f"http://127.0.0.1:{port}"], project)
        run([*DVC, "remote", "modify", "--local", "store", "access_key_id", "testing"], project)
        run([*DVC, "remote", "modify", "--local", "store", "secret_access_key", "testing"], project)
        assert "testing" not in (project / ".dvc" / "config").read_text()
        assert "secret_access_key" in (project / ".dvc" / "config.local").read_text()
        run(["git", "add", ".dvc/config"], project)
        run(["git", "commit", "-qm", "s3 remote"], project)
        assert "config.local" not in run(["git", "ls-files", ".dvc"], project).stdout
        # A clone has no config.local: there the credentials come from the environment.
        _push_clone_pull_regenerate(project, tmp_path, env=env)
    finally:
        server.stop()
