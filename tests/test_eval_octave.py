"""The official WIDER FACE arithmetic run in GNU Octave itself, when Octave is installed (skipped
otherwise): the spec's MATLAB functions (boxoverlap, image_evaluation, image_pr_info, VOCap, the
norm_score and read_pred sort steps) as .m files, on random adversarial cases and the spec's
minimal cases, must give exactly what ``evaluate(..., protocol="official")`` gives. This checks
the MATLAB integer and single-precision semantics the library emulates against a real MATLAB
interpreter, not against our reading of them."""
from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

from retinaface.evaluation import evaluate
from tests.test_eval_protocols import MINIMAL, adversarial_case, one_image

pytestmark = pytest.mark.skipif(shutil.which("octave") is None, reason="GNU Octave not installed")

M_FILES = {
    "boxoverlap": """\
function o = boxoverlap(a, b)
x1 = max(a(:,1), b(1)); y1 = max(a(:,2), b(2));
x2 = min(a(:,3), b(3)); y2 = min(a(:,4), b(4));
w = x2-x1+1; h = y2-y1+1;
inter = w.*h;
aarea = (a(:,3)-a(:,1)+1) .* (a(:,4)-a(:,2)+1);
barea = (b(3)-b(1)+1) * (b(4)-b(2)+1);
o = inter ./ (aarea+barea-inter);
o(w<=0) = 0;
o(h<=0) = 0;
end
""",
    "image_evaluation": """\
function [pred_recall, proposal_list] = image_evaluation(pred_info, gt_bbx, ignore, IoU_thresh)
pred_recall = zeros(size(pred_info,1),1);
recall_list = zeros(size(gt_bbx,1),1);
proposal_list = ones(size(pred_info,1),1);
pred_info(:,3) = pred_info(:,1) + pred_info(:,3);
pred_info(:,4) = pred_info(:,2) + pred_info(:,4);
gt_bbx(:,3) = gt_bbx(:,1) + gt_bbx(:,3);
gt_bbx(:,4) = gt_bbx(:,2) + gt_bbx(:,4);
for h = 1:size(pred_info,1)
    overlap_list = boxoverlap(gt_bbx, pred_info(h,1:4));
    [max_overlap, idx] = max(overlap_list);
    if max_overlap >= IoU_thresh
        if (ignore(idx) == 0)
            recall_list(idx) = -1;
            proposal_list(h) = 0;
        elseif (recall_list(idx) == 0)
            recall_list(idx) = 1;
        end
    end
    r_keep_index = find(recall_list == 1);
    pred_recall(h) = length(r_keep_index);
end
end
""",
    "image_pr_info": """\
function img_pr_info = image_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
img_pr_info = zeros(thresh_num,2);
for t = 1:thresh_num
    thresh = 1-t/thresh_num;
    r_index = find(pred_info(:,5)>=thresh,1,'last');
    if (isempty(r_index))
        img_pr_info(t,2) = 0; img_pr_info(t,1) = 0;
    else
        p_index = find(proposal_list(1:r_index) == 1);
        img_pr_info(t,1) = length(p_index);
        img_pr_info(t,2) = pred_recall(r_index);
    end
end
end
""",
    "VOCap": """\
function ap = VOCap(rec,prec)
mrec=[0;rec;1];
mpre=[0;prec;0];
for i=numel(mpre)-1:-1:1
    mpre(i)=max(mpre(i),mpre(i+1));
end
i=find(mrec(2:end)~=mrec(1:end-1))+1;
ap=sum((mrec(i)-mrec(i-1)).*mpre(i));
end
""",
    "run_case": """\
function aps = run_case(gts, keeps, preds, thresh_num)
% gts{j}: int32 K x 4; keeps{s}{j}: indices; preds{j}: N x 5 double in file order (or [])
n = numel(gts);
for j = 1:n
  if ~isempty(preds{j})
    [~, s_index] = sort(preds{j}(:,5), 'descend');
    preds{j} = preds{j}(s_index,:);
  end
end
max_score = realmin('single'); min_score = realmax('single');
for j = 1:n
  if isempty(preds{j}), continue; end
  max_score = max(max_score, max(preds{j}(:,5)));
  min_score = min(min_score, min(preds{j}(:,5)));
end
for j = 1:n
  if isempty(preds{j}), continue; end
  preds{j}(:,5) = (preds{j}(:,5) - min_score)/(max_score - min_score);
end
aps = zeros(1,3);
for s = 1:3
  count_face = 0; pr = zeros(thresh_num,2);
  for j = 1:n
    gt_bbx = gts{j}; pred_info = preds{j}; keep_index = keeps{s}{j};
    count_face = count_face + length(keep_index);
    if isempty(gt_bbx) || isempty(pred_info), continue; end
    ignore = zeros(size(gt_bbx,1),1);
    if ~isempty(keep_index), ignore(keep_index) = 1; end
    [pred_recall, proposal_list] = image_evaluation(pred_info, gt_bbx, ignore, 0.5);
    pr = pr + image_pr_info(thresh_num, pred_info, proposal_list, pred_recall);
  end
  prec = pr(:,2)./pr(:,1); rec = pr(:,2)/count_face;
  aps(s) = VOCap(rec, prec);
end
end
""",
}


def literal(a, integer: bool) -> str:
    a = np.asarray(a)
    if a.size == 0:
        return "[]"
    rows = ";".join(" ".join(repr(int(v)) if integer else repr(float(v)) for v in r) for r in a.reshape(len(a), -1))
    return f"int32([{rows}])" if integer else f"[{rows}]"


def octave_call(gt, preds) -> str:
    boxes, keeps, dets = [], {s: [] for s in ("easy", "medium", "hard")}, []
    for e, event in enumerate(gt.events):
        for i, name in enumerate(gt.images[e]):
            boxes.append(literal(gt.boxes[e][i], True))
            for s in keeps:
                keeps[s].append("[" + " ".join(str(int(x)) for x in np.ravel(gt.keep[s][e][i])) + "]")
            d = preds.get((event, name))
            dets.append(literal(d[:, :5], False) if d is not None and len(d) else "[]")
    keep_cells = ", ".join("{" + ", ".join(keeps[s]) + "}" for s in keeps)
    return (f"aps = run_case({{{', '.join(boxes)}}}, {{{keep_cells}}}, {{{', '.join(dets)}}}, 1000); "
            f"printf('%.17g %.17g %.17g\\n', aps);")


def test_octave_runs_the_official_arithmetic_like_the_library(tmp_path):
    for name, text in M_FILES.items():
        (tmp_path / f"{name}.m").write_text(text)
    cases = [adversarial_case(np.random.default_rng(10_000 + c)) for c in range(24)]
    cases += [(one_image(f, k), {("0--E", "img"): np.array(d, float)}) for f, k, d, _, _ in MINIMAL.values()]
    (tmp_path / "cases.m").write_text("\n".join(octave_call(gt, p) for gt, p in cases) + "\n")
    done = subprocess.run(["octave", "--no-gui", "--norc", "-q", "cases.m"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == len(cases), done.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for (gt, preds), row in zip(cases, rows):
            result = evaluate(preds, gt, protocol="official")
            got = np.array([result.easy, result.medium, result.hard])
            want = np.array([float(v) for v in row])
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-12)
    # and the minimal cases carry the spec's official values
    assert [float(r[0]) for r in rows[-4:]] == [c[3] for c in MINIMAL.values()]
