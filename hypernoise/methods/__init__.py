"""The method family: one runner signature, one registry, one sampling path.

    METHODS.get(name).run(generator, reward, noise [B, *latent_shape], prompts, RunConfig) -> MethodOutput
    train(cfg, prompts, out_dir, method=...)  (HyperNoise and direct fine-tuning)

A method is one module that registers itself; it is listed once below so that the registry is
complete whenever ``hypernoise.methods`` is imported.
"""

from hypernoise.methods.base import METHODS, Cost, Method, MethodOutput, RunConfig, Sample, sample, seeded_noise
# each module registers its method
from hypernoise.methods import best_of_n, finetune, hypernoise, hypernoise_reno, reno  # noqa: F401,E402
from hypernoise.methods.train import TRAINING, train  # noqa: E402

__all__ = ["METHODS", "TRAINING", "Cost", "Method", "MethodOutput", "RunConfig", "Sample", "sample", "seeded_noise",
           "train"]
