import pytest
import torch
from hypothesis import HealthCheck, settings

# One Hypothesis profile for the whole suite: derandomized (the same examples every run, so CI is
# deterministic), a bounded number of examples, and no per-example deadline (the first call of a
# torch op can take a while). A test may lower max_examples further with its own @settings.
settings.register_profile(
    "sdeflow",
    max_examples=25,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("sdeflow")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
