"""The official Diffusers unconditional-training recipe, as the baseline of `time_to_quality.py`.

Written from the recipe's description, not from the example's code: a `UNet2DModel` trained with `DDPMScheduler`
(1000 steps, linear betas, epsilon prediction, `clip_sample` on) on the plain noise-prediction MSE; AdamW (lr 1e-4,
betas (0.95, 0.999), weight decay 1e-6, eps 1e-8) with a cosine learning-rate schedule after 500 warm-up steps and
gradient clipping at norm 1; an EMA of the weights (`diffusers.training_utils.EMAModel`, warm-up inv_gamma 1.0,
power 0.75, max decay 0.9999); batches of 16 shuffled images per epoch, no random flip, images scaled to [-1, 1].
The data is the embedded digits at `--resolution`, or with `--dataset_dir` a `save_to_disk` dataset such as
`data/fashion-mnist` (its `train` split, images smaller than the resolution padded with black, as train.py
`--pad_to_resolution` does), one channel (the official script would convert them to RGB; one channel keeps the data
identical to this project's recipe). Saves a `DDPMPipeline` with the EMA weights at the end, and with `--save_steps`
also after those optimizer steps (in `output_dir/step-N`).

    python benchmarks/baseline_official_recipe.py --output_dir /tmp/official --max_train_steps 2000 --resolution 16 \
        --block_out_channels 32 64 64 --attention_levels false true true --attention_head_dim 32 --norm_num_groups 8
"""

import argparse
import time

import torch
import torch.nn.functional as F
from common import build_unet
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from diffusers_simple_training.data import ImageTransform
from diffusers_simple_training.digits_classifier import digits_images


def dataset_images(dataset_dir: str, resolution: int) -> torch.Tensor:
    """The `train` split of a `save_to_disk` dataset as `(N, 1, resolution, resolution)` in [-1, 1], padded."""
    import datasets
    import numpy as np

    dataset = datasets.load_from_disk(dataset_dir)["train"]
    transform, rng = ImageTransform(resolution, 1, center_crop=True, pad_to_resolution=True), np.random.default_rng(0)
    return torch.from_numpy(np.stack([transform(image, rng) for image in dataset["image"]]))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=str, required=True, help="Where the DDPMPipeline is saved.")
    parser.add_argument("--max_train_steps", type=int, required=True)
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--block_out_channels", type=int, nargs="+", required=True, help="UNet channels per level.")
    parser.add_argument("--attention_levels", type=lambda s: s.lower() == "true", nargs="+", required=True,
                        help="AttnDownBlock2D (true) or DownBlock2D (false) per level, e.g. `false true true`.")
    parser.add_argument("--attention_head_dim", type=int, required=True)
    parser.add_argument("--norm_num_groups", type=int, required=True)
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--dataset_dir", type=str, default=None, help="A `save_to_disk` dataset (default: the digits).")
    parser.add_argument("--save_steps", type=int, nargs="*", default=[], help="Also save the EMA pipeline after these steps.")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    if args.dataset_dir:
        images = dataset_images(args.dataset_dir, args.resolution)
    else:
        images = digits_images(args.resolution)[0]  # (1797, 1, resolution, resolution) in [-1, 1]
    model = build_unet("UNet2DModel", args.resolution, 1, args.block_out_channels, args.attention_levels,
                       args.attention_head_dim, args.norm_num_groups)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon", clip_sample=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=500, num_training_steps=args.max_train_steps)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75,
                   model_cls=UNet2DModel, model_config=model.config)

    start, step = time.perf_counter(), 0
    model.train()
    while step < args.max_train_steps:
        for batch in torch.randperm(len(images)).split(args.train_batch_size):  # one epoch
            clean = images[batch]
            noise = torch.randn_like(clean)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(batch),))
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            loss = F.mse_loss(model(noisy, timesteps).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(model.parameters())
            step += 1
            if step in args.save_steps:
                save_ema_pipeline(model, ema, noise_scheduler, f"{args.output_dir}/step-{step}")
                print(f"step {step}: {time.perf_counter() - start:.1f} s, loss {loss.item():.4f}", flush=True)
            if step == args.max_train_steps:
                break
    print(f"trained {step} steps in {time.perf_counter() - start:.1f} s, last loss {loss.item():.4f}")

    save_ema_pipeline(model, ema, noise_scheduler, args.output_dir)


def save_ema_pipeline(model, ema, noise_scheduler, output_dir: str) -> None:
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    DDPMPipeline(unet=model, scheduler=noise_scheduler).save_pretrained(output_dir)
    ema.restore(model.parameters())


if __name__ == "__main__":
    main()
