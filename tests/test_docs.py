"""The README's Python tour runs as written."""

import re
from pathlib import Path

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


def test_performance_doc_ensemble_example_runs():
    blocks = _python_blocks(ROOT / "docs" / "performance.md")
    exec(compile(blocks[0], "performance.md", "exec"), {})
