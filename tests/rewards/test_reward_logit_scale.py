"""CLIP and PickScore scale s = exp(logit_scale), taken in the dtype the model runs in.

The reference is the authors' expression: ``model.logit_scale.exp()`` on the model cast to the run's
dtype (ExplainableML/HyperNoise rewards/clip.py:53, pickscore.py:52 in bf16; ReNO rewards/clip.py:52,
pickscore.py:51 in fp16), restated on a tensor of the folder's logit_scale.
"""

import pytest
import torch

from hypernoise.rewards import build_reward


@pytest.mark.parametrize("name", ["clip", "pickscore"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_scale_is_exp_of_the_logit_scale_in_the_rewards_dtype(name, dtype, clip_model_dir):
    from transformers import CLIPModel

    reward = build_reward(name, pretrained=clip_model_dir, dtype=dtype).rewards[0]
    theirs = CLIPModel.from_pretrained(clip_model_dir).to(dtype).logit_scale.detach().exp()
    assert reward.scale == float(theirs)
    assert reward.scale == {torch.float32: pytest.approx(100.0), torch.bfloat16: 99.0, torch.float16: 100.0}[dtype]
    reward.float()  # cast again: the scale follows (the rounded logit_scale, now exp'd in float32)
    again = CLIPModel.from_pretrained(clip_model_dir).to(dtype).float().logit_scale.detach().exp()
    assert reward.scale == float(again)
