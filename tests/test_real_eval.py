"""Regression of the whole detect + evaluate path on real photos: the published Pytorch_Retinaface
mobilenet0.25 weights on the 264 real WIDER val photos of ``../shared/real`` (skipped without it)."""
from __future__ import annotations


import pytest
from conftest import REAL  # ../shared/real, or $RETINAFACE_REAL_DATA

torch = pytest.importorskip("torch")

WEIGHTS = REAL / "weights" / "mobilenet0.25_Final.pth"
DATA = REAL / "widerface"
pytestmark = pytest.mark.skipif(not (DATA / "val" / "ground_truth").is_dir() or not WEIGHTS.is_file(),
                                reason=f"{REAL} (real WIDER photos and weights) is absent")

# Official-protocol AP of the published weights on the 264 photos at VGA (short side 480, long
# side at most 640: every photo fits 640x480; about 3x fewer pixels than original size, which keeps
# the test near 10 s on 2 idle cores), threshold 0.02, NMS 0.4, batch 1. Recorded with
# evaluate_model(load_model(WEIGHTS), DATA, target_size=480, max_size=640). Any change to
# resizing, mean, priors, decoding, NMS, the prediction rows or the AP arithmetic moves it.
RECORDED_VGA = {"easy": 0.9234305867173246, "medium": 0.8681416856120578, "hard": 0.5382333233741486}


def test_official_weights_ap_on_real_val_equals_recorded_figure():
    import retinaface
    from retinaface.evaluation.predict import evaluate_model

    model = retinaface.load_model(WEIGHTS)
    result = evaluate_model(model, DATA, target_size=480, max_size=640, workers=0, progress=False)
    ap = result.as_dict()
    for setting, recorded in RECORDED_VGA.items():
        assert ap[setting] == pytest.approx(recorded, abs=1e-6), (setting, ap[setting], recorded)
