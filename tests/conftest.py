"""Shared test set-up: Triton's interpreter on machines without a GPU, the real-image fixture, markers."""
import os
from pathlib import Path

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    # Must be set before triton is first imported: kernels then run on the CPU through the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# HBA_CIFAR_MINI points elsewhere, e.g. on a GPU machine that has no ../shared beside the checkout
CIFAR_MINI = Path(os.environ.get("HBA_CIFAR_MINI", SHARED_DATA / "cifar10_mini.npz"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cifar_mini():
    """Real CIFAR-10 images from ../shared/data (never copied into the project)."""
    if not CIFAR_MINI.exists():
        pytest.skip(f"real CIFAR-10 images not found at {CIFAR_MINI} (../shared/data is beside the checkout)")
    import numpy as np

    return dict(np.load(CIFAR_MINI))
