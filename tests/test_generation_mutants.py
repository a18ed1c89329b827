"""Generation's fingerprint: what must make a resumable .partial file stale."""

import json

from conftest import tiny_params
from vigsm.config import SECTIONS, parse_section
from vigsm.generation import fingerprint, read_partial

ROWS = [{"id": "test-0", "prompt": [{"role": "user", "content": "1+1?"}]},
        {"id": "test-1", "prompt": [{"role": "user", "content": "2+2?"}]}]


def _sections(tmp_path, **overrides):
    params = tiny_params(tmp_path / "model", **overrides)
    return parse_section("model", params["model"], SECTIONS["model"]), \
        parse_section("generate", params["generate"], SECTIONS["generate"])


def _adapter(path, weights: bytes):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"r": 4}', encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def test_another_adapter_makes_the_partial_file_stale(tmp_path):
    model_p, gen_p = _sections(tmp_path)
    a = _adapter(tmp_path / "a", b"\x00\x01")
    b = _adapter(tmp_path / "b", b"\x00\x02")  # the same files, other weights
    fp_a, fp_b = fingerprint(model_p, gen_p, ROWS, a), fingerprint(model_p, gen_p, ROWS, b)
    assert len({fp_a, fp_b, fingerprint(model_p, gen_p, ROWS, None)}) == 3
    assert fingerprint(model_p, gen_p, ROWS, _adapter(tmp_path / "copy", b"\x00\x01")) == fp_a  # same files, same run
    (a / "adapter_model.safetensors").rename(a / "renamed.safetensors")
    assert fingerprint(model_p, gen_p, ROWS, a) != fp_a  # file names count too
    partial = tmp_path / "preds.jsonl.partial"
    partial.write_text(json.dumps({"fingerprint": fp_b}) + "\n" + json.dumps({"id": "test-0", "raw": "2"}) + "\n")
    assert read_partial(partial, fp_b) == {"test-0": {"id": "test-0", "raw": "2"}}
    assert read_partial(partial, fp_a) == {}  # generated with adapter b: not resumed for adapter a


def test_fingerprint_reads_the_prompts_and_settings(tmp_path):
    model_p, gen_p = _sections(tmp_path)
    fp = fingerprint(model_p, gen_p, ROWS, None)
    assert fingerprint(model_p, gen_p, list(ROWS), None) == fp
    assert fingerprint(model_p, gen_p, ROWS[:1], None) != fp
    assert fingerprint(model_p, gen_p, [ROWS[1], ROWS[0]], None) != fp
    mp2, gp2 = _sections(tmp_path, generate={"max_new_tokens": 13})
    assert fingerprint(mp2, gp2, ROWS, None) != fp
    mp3, gp3 = _sections(tmp_path, model={"max_seq_length": 1024})  # read by training only
    assert fingerprint(mp3, gp3, ROWS, None) == fp
