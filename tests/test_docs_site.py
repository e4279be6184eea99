"""The documentation site: it builds in strict mode, documents every public name, and its code runs.

- ``mkdocs build --strict`` (skipped when mkdocs is not installed: ``pip install -e ".[docs]"``):
  warnings are errors, so a renamed or removed name that an API page or a docstring refers to, a
  docstring parameter that is not in the signature, or a broken relative link fails the build.
- The built inventory (``objects.inv``, written by mkdocstrings) has an entry for every name in
  ``__all__`` of ``sdeflow`` and of each public subpackage.
- Every python block of every page under docs/ runs, in order, in one namespace per page — unless
  another test already runs that page (``RUN_ELSEWHERE``; this test checks that the named test file
  still refers to the page).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_docs import _python_blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Pages whose python blocks another test executes (page -> that test file).
RUN_ELSEWHERE = {
    "api_core.md": "tests/test_simulate.py",
    "concepts.md": "tests/test_docs.py",
    "consistency.md": "tests/test_consistency_function.py",
    "getting_started.md": "tests/test_docs.py",
    "latent.md": "tests/test_latent_docs.py",
    # test_docs runs the ensemble and (on CUDA) the Triton block; the third block is a torchrun
    # launch script over 10 million paths, run by the distributed tests' workers in small form.
    "performance.md": "tests/test_docs.py",
    "samplers.md": "tests/test_examples.py",
    "training.md": "tests/test_docs.py",
    "verify.md": "tests/test_verify_cli.py",
}

#: The packages whose ``__all__`` the API reference must cover.
PUBLIC_PACKAGES = ("sdeflow", "sdeflow.consistency", "sdeflow.latent", "sdeflow.fokker_planck", "sdeflow.verify",
                   "sdeflow.generative", "sdeflow.distributed")


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if not any(part.startswith("_") for part in p.parts))


def _page_name(path: Path) -> str:
    return path.relative_to(DOCS).as_posix()


def _pages_run_here() -> list[str]:
    return [_page_name(p) for p in _pages() if _page_name(p) not in RUN_ELSEWHERE and _python_blocks(p)]


def test_every_page_is_in_the_nav():
    # mkdocs.yml's nav must list every page (the strict build also refuses omitted pages) and only pages
    # that exist
    import re

    nav = set(re.findall(r"^\s*-\s.*?:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {_page_name(p) for p in _pages()}
    assert pages - nav == set(), f"add these pages to the nav in mkdocs.yml: {sorted(pages - nav)}"
    assert nav - pages == set(), f"the nav in mkdocs.yml lists missing pages: {sorted(nav - pages)}"


def test_pages_run_elsewhere_are_run_there():
    for page, test_file in RUN_ELSEWHERE.items():
        assert (DOCS / page).exists(), f"RUN_ELSEWHERE lists {page}, which no longer exists"
        assert page in (ROOT / test_file).read_text(), f"{test_file} no longer refers to docs/{page}"


def test_new_pages_have_code_that_runs_here():
    # the how-tos and the index each carry runnable code; they must not silently drop out of this test
    here = _pages_run_here()
    for page in ("index.md", "howto/custom_sde.md", "howto/custom_sampler.md", "howto/consistency_distillation.md",
                 "howto/gpu.md"):
        assert page in here, page


@pytest.mark.parametrize("page", _pages_run_here())
def test_doc_page_blocks_run(page):
    scope: dict = {"__name__": f"docs_{page.replace('/', '_')}"}
    for i, code in enumerate(_python_blocks(DOCS / page)):
        exec(compile(code, f"docs/{page}[{i}]", "exec"), scope)


def _inventory(path: Path) -> set[str]:
    header, _, rest = path.read_bytes().partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2"), header[:40]
    return {line.split(" ", 1)[0] for line in zlib.decompress(rest).decode().splitlines() if line.strip()}


@pytest.mark.slow
def test_site_builds_strict_and_documents_every_public_name(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    documented = {name.rsplit(".", 1)[-1] for name in _inventory(site / "objects.inv")}
    missing = {}
    for pkg in PUBLIC_PACKAGES:
        module = importlib.import_module(pkg)
        names = [n for n in module.__all__ if not n.startswith("__")]
        absent = [n for n in names if n not in documented]
        if absent:
            missing[pkg] = absent
    assert missing == {}, f"public names without an API entry: {missing}"
    for page in ("index.html", "api/index.html", "howto/custom_sampler.html", "api/solve.html"):
        assert (site / page).exists(), page
    shutil.rmtree(site)


def test_repo_link_hook_rewrites_only_existing_files_outside_docs():
    spec = importlib.util.spec_from_file_location("repo_links", DOCS / "_hooks" / "repo_links.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    repo = ROOT.resolve()
    docs = repo / "docs"
    text = ("[RESULTS.md](../benchmarks/RESULTS.md) [the example](../examples/custom_sampler.py) "
            "[gone](../no_such_file.md) [guide](verify.md) [web](https://example.org/a.md)\n"
            "```\n[kept](../benchmarks/RESULTS.md)\n```\n")
    out = hook._rewrite(text, docs, docs, repo)
    assert "`benchmarks/RESULTS.md`" in out and "the example (`examples/custom_sampler.py`)" in out
    # a link to a file that exists nowhere stays a link, so the strict build still reports it
    assert "[gone](../no_such_file.md)" in out
    assert "[guide](verify.md)" in out and "[web](https://example.org/a.md)" in out
    assert "[kept](../benchmarks/RESULTS.md)" in out          # code blocks are left alone
    # from a page in a subfolder the same file is one more level up
    assert hook._rewrite("[r](../../benchmarks/RESULTS.md)", docs / "howto", docs, repo) == "r (`benchmarks/RESULTS.md`)"


def test_griffe_docstring_extensions():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("docstrings_ext", DOCS / "_griffe" / "docstrings.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    doc = ("Summary, with a, b: not an entry.\n\nArgs:\n    t0, t1: the start and\n        end times.\n"
           "    x (Tensor): state (B, d).\n\nReturns:\n    a, b: left alone (not an argument section).\n")
    out = ext.split_grouped_params(doc)
    assert "    t0: the start and\n        end times.\n    t1: the start and\n        end times.\n" in out
    assert "    x (Tensor): state (B, d)." in out
    assert "Summary, with a, b: not an entry." in out and "    a, b: left alone" in out
    assert ext.plain_roles("see :func:`sdeflow.simulate` and :class:`~sdeflow.latent.Autoencoder`") == (
        "see `sdeflow.simulate` and `Autoencoder`")
