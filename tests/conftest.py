"""Shared test fixtures: paths into ../shared and small generated inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
GROUND_TRUTH = SHARED / "widerface" / "ground_truth"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fixture_io():
    return dict(np.load(FIXTURES / "biubug6_mnet025_io.npz"))


@pytest.fixture(scope="session")
def legacy_checkpoint() -> Path:
    return FIXTURES / "biubug6_mnet025_seed0.pth"


@pytest.fixture(scope="session")
def legacy_checkpoint_dp() -> Path:
    return FIXTURES / "biubug6_mnet025_seed0_dp.pth"


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic WIDER FACE (64 train / 48 val images of 160 x 160), shared by the training
    and adaptive-width tests; tests must not write into it."""
    from retinaface.data.synthetic import generate_synthetic_widerface

    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate_synthetic_widerface(root, num_train=64, num_val=48, image_size=(160, 160), seed=0)
    return root


@pytest.fixture(scope="module")
def single_thread():
    """For modules of tiny tensors: one thread is faster and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
