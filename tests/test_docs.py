"""The documentation runs: every fenced Python block of README.md and docs/*.md.

* Python blocks (```python) of one file run in order, in one namespace, in a
  fresh temporary working directory. A block opts out with a first line
  ``# doctest: skip (reason)``; keep those rare: only what truly cannot run in
  a test (a long training run).
* Shell blocks (```bash, ```console, ...) are not run; every ``minigrad ...``
  command in them must name a real subcommand and parse with the real
  argument parser; in inline code (`minigrad train`) it must name a real
  subcommand.
* Output quoted under ``$ minigrad explain ...`` in a console block is the
  real output: its lines, ``...`` marking cuts, appear in that order.
* docs/api.md names every public name of ``minigrad`` and ``models``, and
  every relative link and picture points to a file that exists.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

import minigrad
import models
import models.cells
from models.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOC_FILES]

PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell", "console", "shell-session", "zsh"}
SKIP = re.compile(r"^#\s*doctest:\s*skip\b(?P<reason>.*)$")

PENDING_LINKS: set[str] = set()
"""Pages other parts of the project write; a link to one of them may point ahead
of it until it exists."""


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, code (dedented) and first code line (1-based)."""

    path: Path
    lang: str
    code: str
    line: int


_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        lang = (m["info"].split() or [""])[0].lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        else:
            raise AssertionError(f"{path}:{i + 1}: code block is never closed")
        out.append(Block(path, lang, "\n".join(body) + "\n", i + 2))
        i = j + 1
    return out


def prose(path: Path) -> str:
    """The Markdown text outside fenced blocks."""
    text = path.read_text(encoding="utf-8")
    kept: list[str] = []
    inside: str | None = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m is not None and (inside is None or m["fence"].startswith(inside)):
            inside = None if inside is not None else m["fence"]
            continue
        if inside is None:
            kept.append(line)
    return "\n".join(kept)


# --------------------------------------------------------------------------- python blocks


def test_there_is_documentation() -> None:
    assert (ROOT / "README.md").exists()
    for name in ("index", "derivation", "custom-cell", "new-node", "api"):
        assert (ROOT / "docs" / f"{name}.md").exists(), name


@pytest.fixture
def restore_registries() -> object:
    """A block may register a cell in ``models.cells.CELLS``; put the registry back."""
    saved = dict(models.cells.CELLS)
    yield
    models.cells.CELLS.clear()
    models.cells.CELLS.update(saved)


@pytest.mark.usefixtures("restore_registries")
@pytest.mark.parametrize("path", DOC_FILES, ids=DOC_IDS)
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in code_blocks(path):
        if block.lang not in PYTHON:
            continue
        first = block.code.lstrip().splitlines()[0] if block.code.strip() else ""
        if SKIP.match(first):
            continue
        # pad with blank lines so that a traceback names the line of the Markdown file
        source = "\n" * (block.line - 1) + block.code
        code = compile(source, str(path), "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)


def test_skipped_blocks_say_why() -> None:
    skipped = []
    for path in DOC_FILES:
        for block in code_blocks(path):
            if block.lang not in PYTHON or not block.code.strip():
                continue
            m = SKIP.match(block.code.lstrip().splitlines()[0])
            if m is not None:
                reason = m["reason"].strip(" -:()")
                assert len(reason) >= 10, f"{path}:{block.line}: say why the block cannot run"
                skipped.append(f"{path.name}:{block.line}")
    assert len(skipped) <= 3, f"too many skipped blocks: {skipped}"


# --------------------------------------------------------------------------- shell commands


def _subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            return set(choices)
    raise AssertionError("the minigrad parser has no subcommands")


def _commands(text: str, console: bool) -> list[str]:
    """The command lines of a shell block (only the ``$ `` lines of a console block)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if console:
            if not pending:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
        elif line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _minigrad_argvs(command: str) -> list[list[str]]:
    """The argument lists of every ``minigrad`` invocation in one shell command line."""
    found: list[list[str]] = []
    for part in re.split(r"&&|\|\||;|\|", command):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:
            continue
        while tokens and (re.match(r"^\w+=", tokens[0]) or tokens[0] in ("time", "exec")):
            tokens = tokens[1:]
        if not tokens or tokens[0] != "minigrad":
            continue
        argv: list[str] = []
        for tok in tokens[1:]:
            if re.match(r"^\d?[<>]", tok):
                break
            argv.append(tok)
        found.append(argv)
    return found


def _all_minigrad_commands(inline: bool = True) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``minigrad`` command in shell blocks and, with
    ``inline``, in inline code (where a command may be cut short: `minigrad train`)."""
    out: list[tuple[str, list[str]]] = []
    for path in DOC_FILES:
        for block in code_blocks(path):
            if block.lang in SHELL:
                for cmd in _commands(block.code, console=block.lang != "bash"):
                    for argv in _minigrad_argvs(cmd):
                        out.append((f"{path.name}:{block.line}", argv))
        if inline:
            for span in re.findall(r"`(minigrad [^`]+)`", prose(path)):
                for argv in _minigrad_argvs(span):
                    out.append((f"{path.name} (inline)", argv))
    return out


def test_shell_commands_name_real_subcommands() -> None:
    commands = _all_minigrad_commands()
    assert any(argv[:1] == ["train"] for _, argv in commands), "the README shows minigrad train"
    real = _subcommands()
    for where, argv in commands:
        assert argv, f"{where}: 'minigrad' without a subcommand"
        if argv[0].startswith("-"):
            continue
        assert argv[0] in real, f"{where}: 'minigrad {argv[0]}' is not a subcommand ({real})"


def test_shell_commands_parse(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for where, argv in _all_minigrad_commands(inline=False):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            err = capsys.readouterr().err
            assert exc.code == 0, f"{where}: 'minigrad {' '.join(argv)}' does not parse: {err}"


def test_quoted_explain_output_is_real(capsys: pytest.CaptureFixture[str]) -> None:
    checked = 0
    for path in DOC_FILES:
        for block in code_blocks(path):
            if block.lang != "console":
                continue
            lines = block.code.splitlines()
            for i, line in enumerate(lines):
                if not line.startswith("$ minigrad explain"):
                    continue
                (argv,) = _minigrad_argvs(line[2:])
                shown: list[str] = []
                for out_line in lines[i + 1 :]:
                    if out_line.startswith("$ "):
                        break
                    shown.append(out_line.rstrip())
                assert main(argv) == 0
                real = capsys.readouterr().out.splitlines()
                pos = 0
                for want in shown:
                    if want.strip() == "...":
                        continue
                    while pos < len(real) and real[pos].rstrip() != want:
                        pos += 1
                    assert pos < len(real), (
                        f"{path.name}:{block.line}: line not in the output of "
                        f"'minigrad {' '.join(argv)}' (or out of order): {want!r}"
                    )
                    pos += 1
                checked += 1
    assert checked >= 1


# --------------------------------------------------------------------------- API and links


@pytest.mark.parametrize("module", [minigrad, models], ids=["minigrad", "models"])
def test_api_page_names_every_public_name(module: object) -> None:
    spans = re.findall(r"`([^`]+)`", prose(ROOT / "docs" / "api.md"))
    missing = [
        name
        for name in module.__all__  # type: ignore[attr-defined]
        if not any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", s) for s in spans)
    ]
    assert missing == [], f"docs/api.md does not mention {missing}"


@pytest.mark.parametrize("path", DOC_FILES, ids=DOC_IDS)
def test_relative_links_point_to_files(path: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        rel = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        if rel in PENDING_LINKS:
            continue
        assert file.exists(), f"{path.relative_to(ROOT)}: link to a missing file: {target}"
