import math

import pytest
import torch

from retinaface.box_coder import BoxCoder
from retinaface.priors import PriorGenerator, generate_priors, num_priors


def reference_priors(height, width, min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32)):
    """Loop-by-loop statement of the reference prior layout."""
    out = []
    for sizes, step in zip(min_sizes, steps):
        for i in range(math.ceil(height / step)):
            for j in range(math.ceil(width / step)):
                for size in sizes:
                    out.append([(j + 0.5) * step / width, (i + 0.5) * step / height,
                                size / width, size / height])
    return torch.tensor(out, dtype=torch.float32)


@pytest.mark.parametrize("size", [(240, 320), (97, 131), (33, 7)])
def test_priors_equal_reference_loop(size):
    priors = generate_priors(*size)
    expected = reference_priors(*size)
    assert priors.shape == expected.shape == (num_priors(*size), 4)
    assert torch.equal(priors, expected)


def test_fixture_prior_count():
    assert num_priors(240, 320) == 3160


def test_prior_cache_returns_same_tensor_per_size():
    gen = PriorGenerator()
    a = gen(100, 120)
    assert gen(100, 120) is a
    assert gen(120, 100) is not a
    assert gen(120, 100).shape[0] == gen.count(120, 100)


def test_encode_decode_round_trip():
    torch.manual_seed(0)
    coder = BoxCoder()
    priors = generate_priors(64, 96)
    centre = torch.rand(priors.shape[0], 2)
    size = torch.rand(priors.shape[0], 2) * 0.5 + 0.01
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    assert torch.allclose(coder.decode_boxes(coder.encode_boxes(boxes, priors), priors), boxes, atol=1e-6)
    landmarks = torch.rand(priors.shape[0], 10)
    assert torch.allclose(coder.decode_landmarks(coder.encode_landmarks(landmarks, priors), priors),
                          landmarks, atol=1e-6)
    deltas = torch.randn(2, priors.shape[0], 4)
    assert torch.allclose(coder.encode_boxes(coder.decode_boxes(deltas, priors), priors), deltas, atol=1e-4)


def test_encode_uses_variances():
    coder = BoxCoder((0.1, 0.2))
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    box = torch.tensor([[0.42, 0.42, 0.62, 0.62]])  # centre +0.02, same size
    enc = coder.encode_boxes(box, prior)
    assert torch.allclose(enc, torch.tensor([[1.0, 1.0, 0.0, 0.0]]), atol=1e-5)
    lm = coder.encode_landmarks(torch.tensor([[0.52, 0.48] * 5]), prior)
    assert torch.allclose(lm, torch.tensor([[1.0, -1.0] * 5]), atol=1e-5)


def test_empty_inputs_decode_to_empty():
    coder = BoxCoder()
    assert coder.decode_boxes(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode_landmarks(torch.zeros(0, 10), torch.zeros(0, 4)).shape == (0, 10)
