"""Mention verifier and reward composition with real verifiers (weights, abstention, GDPO)."""
from __future__ import annotations

import numpy as np
import pytest
from _vtools import completion, nan_equal, sample

from softverify.config import VerifierSpec, build_config
from softverify.rewards import compose
from softverify.verifiers import build_verifier
from softverify.verifiers.base import build_from_spec, composition_thresholds


def test_mention_hand_checked():
    v = build_verifier("mention")
    s = v.score([
        sample(completion("yes", "TP53 loss may derepress MYC targets."), pert="TP53", gene="MYC"),
        sample(completion("yes", "tp53 is a tumour suppressor."), pert="TP53", gene="MYC"),
        sample(completion("yes", "TP53-like MYCN changes"), pert="TP53", gene="MYC"),  # MYCN is not MYC
        sample("<answer>yes</answer> TP53 MYC", pert="TP53", gene="MYC"),  # no reasoning at all
        sample(completion("yes", "HLA-A and MT-ND5"), pert="HLA-A", gene="MT-ND5"),
        sample(completion("yes"), question="no genes here"),
    ])
    assert nan_equal(s, [1.0, 0.5, 0.0, 0.0, 1.0, np.nan])


def test_composition_with_real_verifiers(wm_dir):
    """hard + world model + format + a weight-0 mention column, both aggregations."""
    d, tr = wm_dir
    row = tr.iloc[0]
    specs = [VerifierSpec(kind="hard"), VerifierSpec(kind="world_model", params={"model_dir": str(d)}, weight=0.5),
             VerifierSpec(kind="format", weight=0.5, threshold=0.5), VerifierSpec(kind="mention", weight=0.0)]
    verifiers = [build_from_spec(s) for s in specs]
    good, bad = ("yes", "no") if row.label == 1 else ("no", "yes")
    samples = [
        sample(completion(good, f"{row.pert} and {row.gene}"), pert=row.pert, gene=row.gene, label=int(row.label)),
        sample(completion(bad), pert=row.pert, gene=row.gene, label=int(row.label)),
        sample(completion(good), pert="NOT_A_GENE_XYZ", gene=row.gene, label=int(row.label)),  # wm abstains
        sample("garbage", pert="NOT_A_GENE_XYZ", gene=row.gene, label=int(row.label)),
    ]
    scores = np.column_stack([v.score(samples) for v in verifiers])
    assert np.isnan(scores[2:, 1]).all() and np.isfinite(scores[:2, 1]).all()
    w = [s.weight for s in specs]
    th = composition_thresholds(specs)
    assert th == [None, None, 0.5, None]
    groups = np.zeros(4, dtype=int)
    rewards, adv = compose(scores, w, th, groups, "sum_then_normalize")
    fmt = np.where(scores[:, 2] < 0.5, scores[:, 2], 0.5 + (scores[:, 2] - 0.5))  # t=0.5 on [0,1] is the identity
    # abstention: sample 2's reward averages only hard and format (weights 1 and 0.5)
    assert rewards[2] == pytest.approx((1.0 * scores[2, 0] + 0.5 * fmt[2]) / 1.5)
    assert rewards[0] == pytest.approx((scores[0, 0] + 0.5 * scores[0, 1] + 0.5 * fmt[0]) / 2.0)
    # weight 0 = logged only: changing the mention column changes nothing
    s2 = scores.copy()
    s2[:, 3] = 1 - np.nan_to_num(s2[:, 3])
    assert np.allclose(compose(s2, w, th, groups)[0], rewards)
    assert rewards[0] > rewards[1] and adv[0] > 0 > adv[3]
    _, adv_g = compose(scores, w, th, groups, "normalize_then_sum")
    assert np.isfinite(adv_g).all() and adv_g[0] == adv_g.max()


def test_config_and_sweep_style_overrides(wm_dir, coexpr_npz):
    d, _ = wm_dir
    cfg = build_config({}, [
        f"verifiers=[{{kind: hard}}, {{kind: world_model, threshold: 0.3, params: {{model_dir: {d}}}}}, "
        f"{{kind: coexpression, weight: 0.5, params: {{matrix: {coexpr_npz}, top_fraction: 0.2}}}}]",
        "reward.aggregation=normalize_then_sum",
    ])
    vs = [build_from_spec(s) for s in cfg.verifiers]
    assert vs[1].threshold == 0.3 and vs[2].top == 0.2 and vs[2].threshold == pytest.approx(0.8)
    with pytest.raises(ValueError, match=r"verifier 'coexpression' has no parameter\(s\) \['topfraction'\]; its parameters are matrix=None, top_fraction=0.1"):
        build_from_spec(VerifierSpec(kind="coexpression", params={"matrix": str(coexpr_npz), "topfraction": 0.2}))


def test_serving_and_training_give_the_same_reward_for_the_same_sample():
    """/v1/verify's reward = the reward training composes: thresholds and weights applied."""
    import numpy as np

    from softverify.config import VerifierSpec
    from softverify.config import VerifierCore as ServeSpec  # what /v1/verify takes
    from softverify.platform.serve.schema import VerifyRequest
    from softverify.platform.serve.verify import VerifierSet
    from softverify.rewards import compose
    from softverify.types import Sample
    from softverify.verifiers.base import build_from_spec, composition_thresholds

    specs = [VerifierSpec(kind="format", weight=0.5, threshold=0.8), VerifierSpec(kind="hard", weight=1.0)]
    answer = "Probably not. <answer>no</answer>"  # format 0.5 -> 0.3125 under t = 0.8
    sample = Sample(prompt_id="q", prompt="q", completion=answer, metadata={"label": 0}, finish_reason="stop")
    cols = [build_from_spec(s).score([sample]) for s in specs]
    train_reward, _ = compose(np.column_stack(cols), [s.weight for s in specs], composition_thresholds(specs),
                              np.zeros(1, dtype=int))
    served = VerifierSet([ServeSpec(kind=s.kind, weight=s.weight, threshold=s.threshold) for s in specs]).score(
        VerifyRequest(question="q", answer=answer, metadata={"label": 0}))
    assert served["scores"] == {"format": 0.5, "hard": 1.0}
    assert served["reward"] == pytest.approx(float(train_reward[0])) == pytest.approx((0.5 * 0.3125 + 1.0) / 1.5)
