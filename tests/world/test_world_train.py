"""The world's training recipes run end to end (at toy size), reproducibly, into loadable files."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from hypernoise.generators import build_generator
from hypernoise.rewards import build_reward
from hypernoise.world import train

TINY = {
    "generator": train.GeneratorRecipe(data_size=64, batch=8, base_steps=(2, 1), reflow_pairs=16, teacher_steps=2,
                                       student_steps=2),
    "evaluator": train.EvaluatorRecipe(data_size=64, batch=8, steps=2),
    "reward": train.RewardRecipe(data_size=64, batch=8, steps=2),
}
FUNCTIONS = {"generator": train.train_generator, "evaluator": train.train_evaluator, "reward": train.train_reward}


@pytest.mark.parametrize("name", ["generator", "evaluator", "reward"])
def test_recipe_is_reproducible(tmp_path, name):
    quiet = lambda line: None  # noqa: E731
    a = FUNCTIONS[name](tmp_path / "a", TINY[name], log=quiet)
    b = FUNCTIONS[name](tmp_path / "b", TINY[name], log=quiet)
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    c = FUNCTIONS[name](tmp_path / "c", dataclasses.replace(TINY[name], seed=1), log=quiet)
    wc = load_file(str(c))
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_trained_files_load_through_the_user_path(tmp_path):
    quiet = lambda line: None  # noqa: E731
    train.train_generator(tmp_path, TINY["generator"], log=quiet)
    train.train_reward(tmp_path, TINY["reward"], log=quiet)
    gen = build_generator("shapes", pretrained=str(tmp_path))
    reward = build_reward("shapes", per_reward={"shapes": {"pretrained": str(tmp_path)}})
    prompts = ["a photo of a red circle"]
    images = gen.generate(gen.sample_noise(1), gen.encode(prompts))
    assert images.shape == (1, 3, 32, 32) and reward(images, prompts).shape == (1,)


def test_evaluator_members_are_the_single_seed_networks_averaged(tmp_path):
    from hypernoise.world.evaluator import NetEnsemble, WorldEvaluator

    quiet = lambda line: None  # noqa: E731
    pair = train.train_evaluator(tmp_path / "pair", TINY["evaluator"], log=quiet)
    one = train.train_evaluator(tmp_path / "one", dataclasses.replace(TINY["evaluator"], seed=1, members=1), log=quiet)
    ens = WorldEvaluator.from_pretrained(pair)
    assert isinstance(ens.net, NetEnsemble) and len(ens.net.members) == 2
    second = load_file(str(one))
    assert all(torch.equal(v, second[k]) for k, v in ens.net.members[1].state_dict().items())
    images = torch.rand(2, 3, 32, 32)
    single = WorldEvaluator.from_pretrained(one).net(images)[0].softmax(1)
    first = ens.net.members[0](images)[0].softmax(1)
    assert torch.allclose(ens.net(images)[0].exp(), (first + single) / 2, atol=1e-6)
