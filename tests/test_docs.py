"""The README's Python tour runs as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_readme_tour_runs():
    blocks = _python_blocks(ROOT / "README.md")
    assert blocks, "README.md has no python block"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_getting_started_runs():
    for code in _python_blocks(ROOT / "docs" / "getting_started.md"):
        exec(compile(code, "getting_started.md", "exec"), {})


def _block_with(path, needle):
    return next(b for b in _python_blocks(path) if needle in b)


def test_performance_doc_ensemble_example_runs():
    exec(compile(_block_with(ROOT / "docs" / "performance.md", "ensemble_statistics"), "performance.md", "exec"), {})


@pytest.mark.cuda
def test_performance_doc_triton_example_runs():
    exec(compile(_block_with(ROOT / "docs" / "performance.md", 'compile="triton"'), "performance.md", "exec"), {})


def test_concepts_blocks_run():
    blocks = _python_blocks(ROOT / "docs" / "concepts.md")
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, "concepts.md", "exec"), {})


def test_docs_cite_only_the_repository():
    # Theory references point at docs/concepts.md, never at files outside the repository.
    offenders = [str(p.relative_to(ROOT)) for p in [*ROOT.glob("sdeflow/**/*.py"), *ROOT.glob("docs/*.md"),
                                                     ROOT / "README.md"] if "THEORY.md" in p.read_text()]
    assert offenders == []


def test_training_doc_blocks_run():
    blocks = _python_blocks(ROOT / "docs" / "training.md")
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, "training.md", "exec"), {})
