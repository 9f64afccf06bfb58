"""Image editing with an unconditional digits model trained with the demo's recipe (issue 9).

    python benchmarks/editing.py            # trains the model once (~10 min, cached in outputs/editing/), then ~7 min
    python benchmarks/editing.py --tiny     # a smoke test with an in-process 40-step model, seconds

Held out: the 297 digits the evaluation classifier holds out (diffusers_simple_training.digits_classifier); the
diffusion model trains on the other 1500, so neither has seen them.
- Inpainting (RePaint, also with reconstruction guidance): the top or bottom half of each held-out digit is
  regenerated; how often does the classifier recover the true label? Baselines: mean fill (the training mean in the
  missing half) and the nearest training image on the known half (its missing half pasted in).
- SDEdit: held-out digits corrupted by Gaussian noise or a white 6x6 occlusion; Frechet distance in the classifier's
  features to the training digits before and after the edit, and the label accuracy.
- Inversion: DDIM inversion and reconstruction error (pixel RMS in [0, 1]) at 10, 20 and 50 steps.
- Speed: UNet-step time of generation, image-to-image and inpainting at the same batch.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from common import machine_description, parse_args, time_interleaved, write_results

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet
from diffusers_simple_training.digits import load_digits_dataset
from diffusers_simple_training.digits_classifier import HELD_OUT, digits_images, load_digits_classifier
from diffusers_simple_training.reference_classifier import classify
from diffusers_simple_training.frechet import frechet_distance_from_features

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "outputs" / "editing"
RESOLUTION = 16
# The demo trains 1000 steps; 4000 (about 10 min on 2 cores) give a model whose inpainting recovers more labels
# (reconstruction-guided RePaint, top / bottom half: 0.909 / 0.889 after 4000 steps, 0.869 / 0.842 after 1000, w_r = 30)
TRAIN_STEPS = 4000


def add_arguments(parser):
    parser.add_argument("--model_dir", type=Path, default=CACHE / "model", help="The trained model (made if missing).")
    parser.add_argument("--max_train_steps", type=int, default=TRAIN_STEPS, help="Training steps if the model is made here.")


def split():
    """The classifier's held-out digits and the rest (the diffusion model's training set), in [-1, 1]."""
    images, labels = digits_images(RESOLUTION)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))  # as train_classifier splits
    held_out, train = order[:HELD_OUT], order[HELD_OUT:]
    return images[train], labels[train], images[held_out], labels[held_out], train


def train_model(model_dir: Path, train_indices, max_train_steps: int):
    """training/train.py with the demo config made unconditional, on the 1500 training digits, for `max_train_steps`."""
    data_dir = CACHE / "train_digits"
    if not data_dir.exists():
        load_digits_dataset().select(sorted(train_indices.tolist())).save_to_disk(str(data_dir))
    config = CACHE / "uncond.yaml"
    demo = (ROOT / "training" / "configs" / "demo.yaml").read_text().splitlines()
    dropped = ("label_column:", "class_dropout_prob:", "guidance_scale:")
    config.write_text("\n".join(line for line in demo if not line.startswith(dropped)) + "\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "training" / "train.py"),
               "--config", str(config), "--dataset_name", str(data_dir), "--output_dir", str(model_dir),
               "--max_train_steps", str(max_train_steps), "--validation_steps", "1000000",
               "--checkpointing_steps", "250", "--resume_from_checkpoint", "latest"]  # a killed run continues
    print("training:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def tiny_model(train_images):
    """--tiny: a small SimpleUNet trained in-process for 40 steps (v-prediction, as the demo)."""
    torch.manual_seed(0)
    unet = SimpleUNet(sample_size=RESOLUTION, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                      layers_per_block=1, attention_levels=(False, True), norm_num_groups=8, attention_head_dim=8)
    scheduler = SimpleScheduler(sampler="dpmsolver++", prediction_type="v_prediction")
    optimizer = torch.optim.Adam(unet.parameters(), lr=3e-3)
    for _ in range(40):
        x0 = train_images[torch.randint(0, len(train_images), (32,))]
        noise, t = torch.randn_like(x0), torch.randint(0, 1000, (32,))
        target = scheduler.get_velocity(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return SimpleDiffusionPipeline(unet=unet.eval(), scheduler=scheduler)


def with_scheduler(pipe, **config):
    other = SimpleDiffusionPipeline(unet=pipe.unet, scheduler=SimpleScheduler.from_config(pipe.scheduler.config, **config))
    other.set_progress_bar_config(disable=True)
    return other


def to_pt(images):  # [-1, 1] -> [0, 1], the pipeline's input convention
    return (images + 1) / 2


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    train_images, _, held_images, held_labels, train_indices = split()
    n = 12 if args.tiny else len(held_images)
    held_images, held_labels = held_images[:n], held_labels[:n]
    if args.tiny:
        pipe = tiny_model(train_images)
    else:
        if not (args.model_dir / "model_index.json").exists():
            train_model(args.model_dir, train_indices, args.max_train_steps)
        pipe = SimpleDiffusionPipeline.from_pretrained(args.model_dir)
    pipe.set_progress_bar_config(disable=True)
    classifier, classifier_accuracy = load_digits_classifier(RESOLUTION)
    steps = (4, 4, 2) if args.tiny else (100, 20, 50)  # DDPM, DPM-Solver++, DDPM with resampling
    rows, pictures = [], {}

    def accuracy(images):
        return (classify(classifier, images)[1] == held_labels).float().mean().item()

    def run(pipe, seed=0, **kwargs):
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(kwargs["image"]))]
        return pipe(generator=generators, output_type="pt", **kwargs).images * 2 - 1

    rows.append(["classifier", "held-out digits, uncorrupted", "label accuracy", accuracy(held_images)])

    # --- inpainting -------------------------------------------------------------------------------------------------
    ddpm = with_scheduler(pipe, sampler="ddpm")
    dpm = with_scheduler(pipe, sampler="dpmsolver++")
    mean_image = train_images.mean(0)
    for half in ("top", "bottom"):
        mask = torch.zeros(1, 1, RESOLUTION, RESOLUTION)
        if half == "top":
            mask[..., : RESOLUTION // 2, :] = 1
        else:
            mask[..., RESOLUTION // 2 :, :] = 1
        keep = 1 - mask
        mean_fill = keep * held_images + mask * mean_image
        distances = (((held_images[:, None] - train_images[None]) * keep) ** 2).flatten(2).sum(-1)  # known half only
        nearest = keep * held_images + mask * train_images[distances.argmin(1)]
        methods = {
            f"RePaint, DDPM {steps[0]} steps": lambda: run(ddpm, image=to_pt(held_images), mask_image=mask,
                                                           num_inference_steps=steps[0]),
            f"RePaint, DDPM {steps[2]} steps, resampling j=5 r=5": lambda: run(
                ddpm, image=to_pt(held_images), mask_image=mask, num_inference_steps=steps[2], jump_length=min(5, steps[2] - 1),
                jump_n_sample=5),
            f"RePaint, DPM-Solver++ {steps[1]} steps": lambda: run(dpm, image=to_pt(held_images), mask_image=mask,
                                                                   num_inference_steps=steps[1]),
            # Ho et al. 2022's reconstruction guidance: a backward pass per step, 2.1-2.4x a step's time (speed rows)
            **{f"RePaint + reconstruction guidance w_r={w:g}, DDPM {steps[0]} steps": lambda w=w: run(
                ddpm, image=to_pt(held_images), mask_image=mask, num_inference_steps=steps[0],
                reconstruction_guidance_scale=w) for w in (10.0, 30.0, 100.0)},
            f"RePaint + reconstruction guidance w_r=30, DPM-Solver++ {steps[1]} steps": lambda: run(
                dpm, image=to_pt(held_images), mask_image=mask, num_inference_steps=steps[1], reconstruction_guidance_scale=30.0),
        }
        for name, make in methods.items():
            completed = make()
            rows.append([f"inpaint {half} half", name, "label recovery", accuracy(completed)])
            if name.startswith("RePaint + reconstruction guidance w_r=30, DDPM"):
                pictures[f"inpaint {half}"] = [mask_view(held_images, mask), completed, nearest, held_images]
        rows.append([f"inpaint {half} half", "baseline: mean fill", "label recovery", accuracy(mean_fill)])
        rows.append([f"inpaint {half} half", "baseline: nearest training image on the known half", "label recovery",
                     accuracy(nearest)])

    # --- SDEdit -----------------------------------------------------------------------------------------------------
    train_features = classify(classifier, train_images)[0]
    generator = torch.Generator().manual_seed(1)
    noisy = (held_images + 0.5 * torch.randn(held_images.shape, generator=generator)).clamp(-1, 1)
    occluded = held_images.clone()
    corners = torch.randint(0, RESOLUTION - 6, (len(held_images), 2), generator=generator)
    for image, (y, x) in zip(occluded, corners.tolist()):
        image[:, y : y + 6, x : x + 6] = 1.0  # a white (ink) square
    rows.append(["SDEdit", "held-out digits, uncorrupted (floor)", "Frechet distance",
                 frechet_distance_from_features(classify(classifier, held_images)[0], train_features)])
    for corruption, corrupted in (("noise (std 0.5)", noisy), ("occlusion (6x6)", occluded)):
        rows.append([f"SDEdit, {corruption}", "corrupted input", "Frechet distance",
                     frechet_distance_from_features(classify(classifier, corrupted)[0], train_features)])
        rows.append([f"SDEdit, {corruption}", "corrupted input", "label accuracy", accuracy(corrupted)])
        for strength in (0.3, 0.5, 0.7):
            edited = run(dpm, image=to_pt(corrupted), strength=strength, num_inference_steps=steps[1])
            rows.append([f"SDEdit, {corruption}", f"strength {strength}, DPM-Solver++ {steps[1]} steps", "Frechet distance",
                         frechet_distance_from_features(classify(classifier, edited)[0], train_features)])
            rows.append([f"SDEdit, {corruption}", f"strength {strength}, DPM-Solver++ {steps[1]} steps", "label accuracy",
                         accuracy(edited)])
            if strength == 0.5:
                pictures[f"SDEdit {corruption}"] = [corrupted, edited, held_images]

    # --- inversion --------------------------------------------------------------------------------------------------
    inverted = held_images[:64]
    for num_steps in ((2, 4) if args.tiny else (10, 20, 50)):
        out = pipe.invert(to_pt(inverted), num_inference_steps=num_steps, output_type="pt")
        rows.append(["inversion", f"DDIM, {num_steps} steps", "reconstruction RMS (pixels in [0, 1])",
                     out.reconstruction_error.mean().item()])
        pictures[f"inversion {num_steps} steps"] = [inverted, out.reconstruction * 2 - 1]
    out = pipe.invert(to_pt(inverted), num_inference_steps=10, fixed_point_iterations=5, output_type="pt")
    rows.append(["inversion", "DDIM, 10 steps, 5 fixed-point iterations", "reconstruction RMS (pixels in [0, 1])",
                 out.reconstruction_error.mean().item()])

    # --- speed per UNet step ----------------------------------------------------------------------------------------
    batch = to_pt(held_images[:32])
    half_mask = torch.zeros(1, 1, RESOLUTION, RESOLUTION)
    half_mask[..., : RESOLUTION // 2, :] = 1
    speed_steps = 4 if args.tiny else 20
    functions = {
        "generation": lambda: dpm(batch_size=32, num_inference_steps=speed_steps, output_type="pt"),
        "image-to-image (strength 1)": lambda: dpm(image=batch, strength=1.0, num_inference_steps=speed_steps, output_type="pt"),
        "inpainting (RePaint, r = 1)": lambda: dpm(image=batch, mask_image=half_mask, num_inference_steps=speed_steps,
                                                   output_type="pt"),
        "inpainting (RePaint + reconstruction guidance)": lambda: dpm(
            image=batch, mask_image=half_mask, num_inference_steps=speed_steps, reconstruction_guidance_scale=30.0,
            output_type="pt"),
    }
    times = time_interleaved(functions, repeats=1 if args.tiny else 5)
    for name, seconds in times.items():
        rows.append(["speed, batch 32", name, "ms per UNet step", 1000 * seconds / speed_steps])

    notes = f"""
Unconditional {RESOLUTION}x{RESOLUTION} digits model ({"40 in-process steps (--tiny)" if args.tiny else
f"training/configs/demo.yaml without labels, {args.max_train_steps} steps, `{args.model_dir.relative_to(ROOT) if args.model_dir.is_relative_to(ROOT) else args.model_dir}`"}),
{n} held-out digits (the evaluation classifier's held-out set, {classifier_accuracy:.3f} accuracy). Label recovery: the
classifier's accuracy on the completed digits. Frechet distance: in the classifier's 128 penultimate features, to the
1500 training digits. Measured on {machine_description(args.num_threads)}.
"""
    headers = ["Task", "Method", "Metric", "Value"]
    write_results(args.output_dir, "editing", "Image editing: inpainting, SDEdit, inversion", headers, rows, notes,
                  figure(pictures))


def mask_view(images, mask):
    """The input as the model sees it: the regenerated part grey."""
    return images * (1 - mask) + 0.0 * mask


def figure(pictures):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(pictures), 1, figsize=(8, 1.3 * sum(len(v) for v in pictures.values()) / 2 + 1))
    for ax, (title, rows) in zip(np.atleast_1d(axes), pictures.items()):
        grid = torch.cat([torch.cat(list(row[:8].clamp(-1, 1)), dim=-1) for row in rows], dim=-2)[0]
        ax.imshow((grid.numpy() + 1) / 2, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title + "  (rows: " + {2: "input, reconstruction", 3: "corrupted, edited, original",
                                           4: "masked input, RePaint + reconstruction guidance, nearest baseline, original"}[len(rows)] + ")", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
