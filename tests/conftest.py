"""Test fixtures: the files under tests/fixtures (see its README), the real photos of
../shared/real where they exist, and small generated inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "pytorch_retinaface"
GROUND_TRUTH = ROOT / "tests" / "fixtures" / "widerface_ground_truth"
# real WIDER FACE photos and published weights: never in the repository (dataset terms); tests
# that need them skip with one line when the folder is absent
REAL = Path(os.environ.get("RETINAFACE_REAL_DATA", ROOT.parent / "shared" / "real"))

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


def require_real(*parts: str) -> Path:
    """``REAL / parts``, or skip the test with one line naming the missing folder or file."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (real WIDER FACE material, not in the repository)")
    return path
