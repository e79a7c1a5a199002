"""Every code example in the documentation runs as written, and the README stays a front page.

The examples are the ``python`` blocks of every Markdown file in the repository (the README
and the guides beside the code), and the README's ``scripts/run`` lines that need no network,
key or file. The README's examples as users first copied them are kept verbatim in
``readme_examples/``: they must keep running whatever the layout under ``actors/`` becomes.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
DOCS = sorted(p for p in ROOT.rglob("*.md")
              if not {".venv", ".git", ".pytest_cache"} & set(p.relative_to(ROOT).parts))
BLOCKS = [(doc.relative_to(ROOT), i, block) for doc in DOCS
          for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S))]
# A block that defines pytest tests is a harness: tests/actors/testing runs it under pytest.
SCRIPTS = [(doc, i, block) for doc, i, block in BLOCKS if "def test_" not in block]
FIRST_EXAMPLES = sorted((Path(__file__).parent / "readme_examples").glob("example_*.py"))


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.parametrize(("doc", "index", "block"), SCRIPTS,
                         ids=[f"{doc}-{i}" for doc, i, _ in SCRIPTS])
def test_every_python_example_in_the_docs_runs(doc: Path, index: int, block: str) -> None:
    result = run_python(block)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


# The digests of the README's python blocks as users first copied them (one file each in
# readme_examples/, after its three header lines): a reformatting of the copies fails here.
FIRST_EXAMPLE_DIGESTS = {
    "example_blocking": "c4ded88c3f28dc97a104216937a7d0d3547965137aaa1de16a245e3f8fd184da",
    "example_run_loop_injection":
        "8d260a6440dfa1367bd005213257c4e8df8eb437a74ca358244e2329aa3f2d96",
    "example_application_actor":
        "87a4718021c9d31465b020deb140062e74c1bf75fa3258f68c372ea53861a773",
    "example_asyncio": "b688c8953afdebac144912e60aad789d9d50a9c992fddd00c78e2045c01d8b5f",
    "example_handles": "e5e4ba35ef9aa287ef125a471c3f44aa8a3c622ba51b7456c8d9384ebd0b2b92",
    "example_resume": "d900d7239366d69c4595c0fae661052f56c0c867667a19647d220a0f8a9522a7",
}
HEADER_LINES = 3


@pytest.mark.parametrize("path", FIRST_EXAMPLES, ids=lambda p: p.stem)
def test_the_readme_examples_users_first_copied_still_run(path: Path) -> None:
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_first_readme_examples_are_kept_verbatim() -> None:
    assert sorted(p.stem for p in FIRST_EXAMPLES) == sorted(FIRST_EXAMPLE_DIGESTS)
    for path in FIRST_EXAMPLES:
        code = path.read_text().split("\n", HEADER_LINES)[HEADER_LINES]
        assert hashlib.sha256(code.encode()).hexdigest() == FIRST_EXAMPLE_DIGESTS[path.stem], \
            f"{path.name} is no longer the README's example as first copied"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_docs_resolves(doc: Path) -> None:
    """A guide moved beside its code keeps its links: every relative link of every Markdown
    file names a file of the repository."""
    for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
        assert (doc.parent / link).exists(), f"{doc.relative_to(ROOT)}: {link}"


def test_code_cites_only_design_sections_that_exist() -> None:
    """Code cites the design documents inside the repository by their path from the top
    (``actors/DESIGN.md`` with a section number it has, ``protocol/WIRE.md``), never one
    outside it; the Markdown files link to them (checked above) and name sections that exist."""
    sections = set(re.findall(r"^## (§\d+) ", (ROOT / "actors/DESIGN.md").read_text(), re.M))
    assert sections
    sources = [p for folder in ("actors", "protocol", "scripts", "tests")
               for p in (ROOT / folder).rglob("*")
               if p.is_file() and p.suffix in {".py", ".md", ""}]
    cited = 0
    for path in sources:
        for line in path.read_text(errors="replace").splitlines():
            for where, name, section in re.findall(
                    r"([\w./]*?)(DESIGN|WIRE)\.md(?:\)?,? (§\d+))?", line):
                if path.suffix != ".md":
                    assert where + name == {"DESIGN": "actors/DESIGN",
                                            "WIRE": "protocol/WIRE"}[name], (path, line)
                if name == "DESIGN" and section:
                    assert section in sections, (path, line)
                    cited += 1
    assert cited >= 5


def test_the_readme_is_a_front_page() -> None:
    """At most 300 lines: what it is, the layout near the top, the two commands, one short
    example per front door (blocking, application actor, asyncio, handles), the
    precise-stepping, parallel and actions ones, links."""
    assert len(README.splitlines()) <= 300
    assert README.index("## Layout") < README.index("## Two commands")
    examples = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(examples) == 7 and len(FIRST_EXAMPLES) == 6
    assert len(examples[0].strip().splitlines()) <= 15
    for link in re.findall(r"\]\(([^)#]+\.md)\)", README):
        assert (ROOT / link).exists(), link


def test_the_injection_example_is_recorded_by_the_simulator() -> None:
    """The run-loop example sends a transaction with a continue; the simulator records it
    (the same bytes) and the example prints what it saw."""
    [block] = [b for _, _, b in SCRIPTS if "transactions=[my_tx]" in b]
    result = run_python(block)
    assert result.returncode == 0, result.stderr
    assert "simulator recorded 1 injected; the same bytes: True" in result.stdout
    assert "'blocks_executed': " in result.stdout


def test_the_examples_use_the_simulators_timing() -> None:
    """From Python a LocalSimulator session gets the fast keepalive the CLI uses (not the
    45 s deadline meant for a real network), in every example of every doc."""
    calls = [call for _, _, block in SCRIPTS for call in re.findall(
        r"(?:BacktestSession\.(?:start|attach)|spawn_\w+)\((.*?)\)\s*(?:as|$)", block,
        re.S | re.M)]
    assert len(calls) >= 8
    for call in calls:
        assert "timing=sim.timing" in call, call


def test_readme_names_the_defaults_of_scripts_run() -> None:
    """What ``scripts/run`` subscribes to with no flags is written in the README, and is
    what the CLI does (its journal header names the subscriptions)."""
    from protocol.simulator.chain import Chain

    addresses = Chain(0).addresses
    section = README[README.index("With no `--transactions`"):]
    section = section[:section.index("\n\n")]
    for address in addresses[:4]:
        assert f"`{address}`" in section
    assert "`SendContinue(params, reply=future)`" in README and "max_frame_size" in README


def _scripts_run_lines() -> list[list[str]]:
    """The README's ``scripts/run`` commands that need no network, key or file."""
    text = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S)).replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] == ["scripts/run"] and not any(
                w.startswith(("--url", "--resume", "--out", "--chaos")) for w in words):
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("args", _scripts_run_lines(), ids=" ".join)
def test_readme_scripts_run_commands_work_as_written(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "actors.cli", "run", *args],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    if "--json" in args:
        assert result.stderr == "" and result.stdout.startswith("{")


def test_library_comments_give_reasons_not_history() -> None:
    """Comments and docs of the library and scripts keep the reason and drop the history: no
    issue number, review round or review test file (history stays in git)."""
    history = re.compile(r"(?i)\b(?:issues?|rounds?|review|sitting)\s*#?\d+|(?<![\w&])#\d+\b"
                         r"|test_review|review round")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for folder in ("actors", "protocol", "scripts")
             for path in (ROOT / folder).rglob("*")
             if path.is_file() and path.suffix in {".py", ".md", ""}
             for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
             if history.search(line)]
    assert not found, "\n".join(found)
