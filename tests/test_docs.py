"""What a newcomer reads: the README sections that messages point to, the commands it gives, its length,
the links of the README and docs/, the Makefile's offline overrides, and a params.yaml that `dvc exp show`
can print."""

import re
import shlex
from pathlib import Path

import yaml

from conftest import ROOT, SHIPPED_PARAMS, shipped_params
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


# UTF-8 bytes, as `wc -c` counts them (the strictest count: a character outside ASCII counts 2-3): the README
# is for users; measurements and details live in docs/
README_LIMIT = 12_000
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text a reader sees as prose: fenced code, inline code and HTML comments removed (a `[x](y)` in
    code is not a link, and a comment is not shown)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped (letters of any script, digits, `_`
    and `-` kept), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, a repeated one numbered as GitHub numbers it (`-1`, `-2`, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#+ (.+?)\s*$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), flags=re.M):
        slug = _slug(heading.replace("`", ""))
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of one markdown page (inline `[text](target)` or reference `[name]: target`) whose
    file or folder is missing or outside `root`, or whose heading anchor does not exist."""
    prose = _prose(page.read_text(encoding="utf-8"))
    targets = re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*<?([^\s>]+)", prose, flags=re.M)
    bad = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto: are not this repository's
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page.resolve()
        inside = dest == root.resolve() or root.resolve() in dest.parents
        if not (inside and dest.exists()):
            bad.append(target)
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest.read_text(encoding="utf-8"))):
            bad.append(target)
    return bad


def test_readme_is_short():
    size = len(README.encode("utf-8"))
    assert size <= README_LIMIT, f"README.md has {size} bytes; move detail to docs/"


def test_every_relative_link_in_readme_and_docs_resolves():
    assert len(PAGES) > 1, "docs/ holds the detail the README links to"
    bad = {str(page.relative_to(ROOT)): broken_links(page) for page in PAGES}
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}


def test_every_docs_page_is_linked_from_the_readme():
    """A page nobody links is a page nobody reads."""
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in re.findall(r"\]\((docs/[^)#\s]+)", _prose(README))}
    assert set(PAGES[1:]) <= linked, sorted(p.name for p in set(PAGES[1:]) - linked)


def test_link_checker_sees_a_broken_file_and_a_broken_anchor(tmp_path):
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    (tmp_path / "docs" / "q.md").write_text("# Q page\n\n## Ünïcode `code` (x)\n\n## Twice\n\n## Twice\n")
    page.write_text(
        "[ok](q.md#q-page) [ok](q.md#ünïcode-code-x) [ok](q.md#twice-1) [ok](#top) [web](https://x.org/y)\n"
        "# Top\n[gone](missing.md) [bad](q.md#nowhere) `[code](nothere.md)` <!-- [hidden](nothere.md) -->\n"
        "\n[ref]: gone-too.md\n```\n[fenced](nothere.md)\n```\n"
    )
    assert anchors((tmp_path / "docs" / "q.md").read_text()) == {"q-page", "ünïcode-code-x", "twice", "twice-1"}
    assert broken_links(page, root=tmp_path) == ["missing.md", "q.md#nowhere", "gone-too.md"]
    assert broken_links(tmp_path / "docs" / "q.md", root=page.parent) == []
    (tmp_path / "docs" / "r.md").write_text("[up](../outside.md)\n")
    (tmp_path / "outside.md").touch()  # it exists, but outside the root given
    assert broken_links(tmp_path / "docs" / "r.md", root=tmp_path / "docs") == ["../outside.md"]
    assert broken_links(tmp_path / "docs" / "r.md", root=tmp_path) == []


def test_readme_sections_named_in_params_comments_exist():
    """params.yaml's comments send readers to README sections ("see README, GPU")."""
    headings = set(re.findall(r"^#+ (.+?)\s*$", README, flags=re.M))
    text = SHIPPED_PARAMS.read_text(encoding="utf-8")
    named = set(re.findall(r"README, ([A-Z][\w ]*?)\)", text))
    assert named, "params.yaml names README sections"
    assert named <= headings, named - headings


MISSPELT_ON_PURPOSE = {"train.learning_rat"}  # troubleshooting.md shows what DVC says about a misspelt key


def _commands(text: str) -> list[str]:
    """The shell lines of a page: its bash blocks (continuations joined, comments cut) and its inline code."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    lines = [line.split(" # ")[0] for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    outside_blocks = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return lines + re.findall(r"`([^`\n]+)`", outside_blocks)


def test_commands_in_readme_and_docs_name_real_targets_modules_flags_and_keys():
    """`make X` is a Makefile target; `python -m vigsm.X --flag` and `stages/X.py --flag` name a module or
    script that defines that flag; `-S section.key=` names a key of params.yaml (its keys, not its values,
    which `dvc exp run -S` may have changed)."""
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))
    keys = {f"{s}.{k}" for s, sec in shipped_params().items() for k in sec}
    bad, seen = [], 0
    for page in PAGES:
        for cmd in _commands(page.read_text(encoding="utf-8")):
            for target in re.findall(r"(?:^|[;&|(]\s*)make ([a-z][\w-]*)", cmd):
                seen += 1
                if target not in targets:
                    bad.append(f"{page.name}: make {target}")
            for key in re.findall(r"(?<![\w+])-S ([a-z_]+\.[a-z_]+)=", cmd):
                seen += 1
                if key not in keys | MISSPELT_ON_PURPOSE:
                    bad.append(f"{page.name}: -S {key}")
            for module, script, args in re.findall(r"(?:python -m (vigsm\.\w+)|(stages/\w+\.py))(.*)", cmd):
                seen += 1
                path = ROOT / (f"src/{module.replace('.', '/')}.py" if module else script)
                source = path.read_text(encoding="utf-8") if path.exists() else ""
                missing = [f for f in re.findall(r"(?<!\S)(--[a-z][\w-]*)", args) if f'"{f}"' not in source]
                if not source or missing:
                    bad.append(f"{page.name}: {module or script} {missing if source else '(no such file)'}")
    assert seen > 20, seen  # the pages give commands, and the patterns find them
    assert not bad, bad
