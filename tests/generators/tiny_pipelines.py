"""Helpers of the diffusers generator tests: build options, loading, the pipelines' own outputs."""

import torch

FAMILIES = ["sd-turbo", "sana-sprint", "flux-schnell"]
#: build options of the tiny pipelines: short prompts; FLUX's diffusers default size is 128 x VAE factor
BUILD_OPTIONS = {
    "sd-turbo": {},
    "sana-sprint": {"max_sequence_length": 16},
    "flux-schnell": {"height": 32, "width": 32, "max_sequence_length": 16},
}
PROMPTS = ["a red apple", "a blue sky"]


def load_generator(folder, family, **extra):
    from hypernoise.generators import build_generator

    return build_generator("auto", pretrained=str(folder), device="cpu", **{**BUILD_OPTIONS[family], **extra})


def pipeline_images(generator, noise, cond, num_steps, seeds=None):
    """The diffusers pipeline's own output (``__call__``) for the same noise and prompt embeddings."""
    kwargs = dict(latents=noise, num_inference_steps=num_steps, output_type="pt", prompt_embeds=cond["prompt_embeds"])
    if seeds is not None:
        kwargs["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
    if generator.name == "sd-turbo":
        kwargs.update(guidance_scale=0.0)
    elif generator.name == "sana-sprint":
        kwargs.update(prompt_attention_mask=cond["prompt_attention_mask"], use_resolution_binning=False,
                      height=generator.height, width=generator.width)
        if num_steps != 2:
            kwargs["intermediate_timesteps"] = None
    else:
        kwargs.update(pooled_prompt_embeds=cond["pooled_prompt_embeds"], height=generator.height,
                      width=generator.width)
    return generator.pipeline(**kwargs).images


# --------------------------------------------------------------------------- the paper's adapter layout
def reference_targets(backbone):
    """Every Linear and Conv2d, grouped ones included: what the reference code's LoRA targets."""
    return [n for n, m in backbone.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def reference_lora_tensors(backbone, rank, seed=0):
    """LoRA tensors as peft < 0.16 shaped them, keyed without any prefix.

    Linear: A (r, in), B (out, r). Conv2d (grouped or not): A (r, C_in, kh, kw), B (C_out, r, 1, 1).
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name in reference_targets(backbone):
        m = backbone.get_submodule(name)
        if isinstance(m, torch.nn.Linear):
            a, b = (rank, m.in_features), (m.out_features, rank)
        else:
            a, b = (rank, m.in_channels, *m.kernel_size), (m.out_channels, rank, 1, 1)
        state[f"{name}.lora_A.weight"] = torch.randn(a, generator=g) / rank
        state[f"{name}.lora_B.weight"] = torch.randn(b, generator=g) * 0.05
    return state


def write_reference_adapter(folder, backbone, rank=4, alpha=8, prefix="", binary=True, seed=0):
    """A folder like the reference trainer's ``save_model``: adapter_config.json + adapter_model.bin
    (torch.save of the state dict), no hypernoise.json. Returns the (unprefixed) tensors."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    state = reference_lora_tensors(backbone, rank, seed)
    saved = {prefix + k: v for k, v in state.items()}
    if binary:
        torch.save(saved, folder / "adapter_model.bin")
    else:
        save_file(saved, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": reference_targets(backbone),
              "init_lora_weights": "gaussian", "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
              "use_dora": False, "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None,
              "rank_pattern": {}, "alpha_pattern": {}, "task_type": None, "base_model_name_or_path": None}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return state


def reference_noise_delta(generator, state, scaling, noise, cond, final="proj_out"):
    """The delta the reference inference script computes, re-implemented with plain forward hooks on
    an adapter-free generator: every layer adds scaling * B(A(x)); ``final`` returns only that term;
    the transformer runs at timestep 1.0 with guidance 4.5 x guidance_embeds_scale."""
    import torch.nn.functional as F

    def low_rank(m, x, a, b):
        if isinstance(m, torch.nn.Linear):
            return F.linear(F.linear(x, a), b) * scaling
        return F.conv2d(F.conv2d(x, a, stride=m.stride, padding=m.padding, dilation=m.dilation), b) * scaling

    def hook_for(name, a, b):
        def hook(m, inputs, output):
            d = low_rank(m, inputs[0], a, b).to(output.dtype)
            return d if name == final else output + d
        return hook

    net = generator.backbone
    handles = [net.get_submodule(n).register_forward_hook(hook_for(n, state[f"{n}.lora_A.weight"],
                                                                   state[f"{n}.lora_B.weight"]))
               for n in reference_targets(net)]
    try:
        guidance = torch.full([1], 4.5).expand(noise.shape[0]) * net.config.guidance_embeds_scale
        return net(hidden_states=noise, encoder_hidden_states=cond["prompt_embeds"],
                   encoder_attention_mask=cond["prompt_attention_mask"], guidance=guidance,
                   timestep=torch.tensor([1.0]), return_dict=False)[0]
    finally:
        for h in handles:
            h.remove()
