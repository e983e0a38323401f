"""Best-of-N: draw N noises per prompt, generate all, keep the image with the highest reward.

Nested budgets (``budgets``): best-of-N' for N' < N is the best of the first N' candidates of the
same draw (a run with N' draws the same first N' - 1 extra noises), so one run reports every N'
asked, each with the wall time measured once its first N' candidates are generated and scored.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.methods.base import Cost, Meter, MethodOutput, RunConfig, check_budgets, measure, register_method
from hypernoise.training.config import check_int

#: best-of-N candidates of a (prompt, seed) come from seed + this, a stream of their own
CANDIDATE_STREAM = 7_000_000_000


@register_method("best-of-n", help="best of N noises by the reward", budget="candidates")
def run_best_of_n(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
                  config: RunConfig) -> MethodOutput:
    """``best_of_n`` with ``config.n``; each row's candidates come from its own seed's stream
    (``config.seeds``; without them, one stream for the batch); reports ``config.budgets``."""
    seeds = [CANDIDATE_STREAM + int(s) for s in config.seeds] or CANDIDATE_STREAM
    return best_of_n(generator, reward, noise, prompts, n=config.n, num_steps=config.num_steps, seed=seeds,
                     budgets=config.budgets)


@torch.no_grad()
def best_of_n(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str], n: int = 50,
              num_steps: Optional[int] = None, chunk: int = 64, seed: Union[int, Sequence[int]] = 0,
              budgets: Sequence[int] = ()) -> MethodOutput:
    """``noise`` [B, ...] is the first candidate of each prompt; N - 1 more are drawn from ``seed``
    (one seed for the batch, or one per row so that a row's candidates do not depend on the batch).

    Candidates are generated and scored about ``chunk`` images at a time, keeping only the best
    so far per prompt (memory does not grow with N). ``extras["index"]`` says which candidate
    won (0 = the given noise) and ``extras["scores"]`` holds every candidate's reward [B, N].
    ``budgets`` (each N' <= N): ``budgets[N']`` of the output is best-of-N', the best of the first
    N' candidates, its cost read once they are scored (chunks end at every N').
    """
    n = check_int(n, "n")  # N of best-of-N: the given noise and N - 1 more
    chunk = check_int(chunk, "chunk")
    budgets = check_budgets(budgets, n, "candidates")
    b = len(prompts)
    extra = _extra_candidates(generator, b, n - 1, seed).to(noise.dtype)
    candidates = torch.cat([noise.unsqueeze(1), extra], 1)  # [B, N, *latent_shape]
    per = max(1, chunk // max(1, b))
    best_img, scores, nested = None, [], {}
    cost = Cost()
    with measure(cost, noise.device, b) as meter:
        for j0, j1 in _chunks(n, per, budgets):
            block = candidates[:, j0:j1]  # [B, k, ...]
            k = block.shape[1]
            rep = [p for p in prompts for _ in range(k)]
            imgs = generator.generate(block.flatten(0, 1), generator.encode(rep), num_steps)
            r = reward(imgs, rep).float().view(b, k)
            imgs = imgs.view(b, k, *imgs.shape[1:])
            scores.append(r)
            local = r.argmax(1)
            rows = torch.arange(b, device=local.device)
            cand_img, cand_r = imgs[rows, local], r[rows, local]
            if best_img is None:
                best_img, best_r = cand_img, cand_r
            else:
                better = cand_r > best_r
                best_img = torch.where(better.view(-1, *[1] * (cand_img.dim() - 1)), cand_img, best_img)
                best_r = torch.where(better, cand_r, best_r)
            if j1 in budgets and j1 < n:
                nested[j1] = _output(generator, best_img, candidates, torch.cat(scores, 1), num_steps, meter)
        out = _output(generator, best_img, candidates, torch.cat(scores, 1), num_steps)
    out.cost.seconds_per_image, out.cost.peak_memory_mb = cost.seconds_per_image, cost.peak_memory_mb
    out.budgets = {k: nested.get(k, out) for k in budgets}
    return out


def _output(generator: Generator, best_img: torch.Tensor, candidates: torch.Tensor, scores: torch.Tensor,
            num_steps: Optional[int], meter: Optional[Meter] = None) -> MethodOutput:
    """Best-of-N' for the N' candidates scored so far (``scores`` [B, N']); its time and memory
    read from ``meter`` where given."""
    n = scores.shape[1]
    cost = Cost(generator_forward=float(n * generator.nfe(num_steps)), reward_forward=float(n))
    if meter is not None:
        meter.fill(cost)
    index = scores.argmax(1)
    rows = torch.arange(len(index), device=index.device)
    return MethodOutput(best_img, cost, noise=candidates[rows, index], reward=scores[rows, index],
                        extras={"index": index, "scores": scores})


def _chunks(n: int, per: int, budgets: Sequence[int]) -> list[tuple[int, int]]:
    """Candidate ranges [j0, j1) of about ``per`` candidates, split so that one ends at every budget."""
    ends = sorted(set(range(per, n, per)) | {b for b in budgets if b < n} | {n})
    return list(zip([0] + ends[:-1], ends))


def _extra_candidates(generator: Generator, b: int, k: int, seed: Union[int, Sequence[int]]) -> torch.Tensor:
    """[B, k, *latent_shape] candidate noises beyond the given one."""
    if isinstance(seed, int):
        return generator.sample_noise(b * k, seed=seed).view(b, k, *generator.latent_shape)
    if len(seed) != b:
        raise ConfigError(f"best-of-N's `seed` needs one seed per prompt: {len(seed)} for {b}", field="seed")
    return torch.stack([generator.sample_noise(k, seed=int(s)) for s in seed])
