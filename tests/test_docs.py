"""What a newcomer reads: the README sections that messages point to, the commands it gives, the
Makefile's offline overrides, and a params.yaml that `dvc exp show` can print."""

import re
import shlex

import yaml

from conftest import ROOT, shipped_params
from vigsm.config import SECTIONS, parse_section

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_readme_section_a_message_names_exists():
    headings = set(re.findall(r"^#+ (.+?)\s*$", README, flags=re.M))
    named = {m for p in (ROOT / "src").rglob("*.py") for m in re.findall(r"README section '([^']+)'", p.read_text())}
    assert named, "the hub hint names a README section"
    assert named <= headings, named - headings


def test_readme_says_to_activate_the_venv_right_after_the_set_up_commands():
    """`make offline` and `make test` install into .venv; the dvc and python commands after them need it."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    setup = next(b for b in blocks if b.startswith("make offline"))
    assert setup.splitlines()[2].startswith(". .venv/bin/activate"), setup


def test_offline_overrides_are_valid_and_waste_no_step():
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    block = re.search(r"^OFFLINE := (.*?)\n\n", make, flags=re.S | re.M).group(1).replace("\\\n", " ")
    doc = shipped_params()
    words = shlex.split(block)
    for flag, assignment in zip(words[::2], words[1::2], strict=True):
        assert flag == "-S"
        key, value = assignment.split("=", 1)
        section, name = key.split(".")
        assert name in doc[section], key
        doc[section][name] = yaml.safe_load(value)
    parsed = {name: parse_section(name, doc[name], cls) for name, cls in SECTIONS.items()}
    assert parsed["train"].warmup_steps == 0  # a warm-up step runs at learning rate 0: it learns nothing
    assert parsed["train"].max_steps % parsed["train"].eval_steps == 0  # the last step is evaluated once


def test_params_have_no_multiline_value():
    """`dvc exp show` prints every param in one cell: a multi-line value breaks its table and --csv rows."""
    doc = shipped_params()
    multi = [f"{s}.{k}" for s, sec in doc.items() for k, v in sec.items() if isinstance(v, str) and "\n" in v]
    assert not multi
