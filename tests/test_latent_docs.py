"""Every python block of docs/latent.md runs as written."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "latent.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_latent_doc_has_blocks():
    assert len(_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_latent_doc_block_runs(index):
    exec(compile(_blocks()[index], f"latent.md[{index}]", "exec"), {})
