"""Few-step sampling on a trained model: the Fréchet distance of N-call samples to a 1000-step DDPM reference set of
the same model, in a classifier's features (issue 7).

    python benchmarks/sampler_quality_trained.py                # the editing benchmark's model (trained if missing)
    python benchmarks/sampler_quality_trained.py --model_dir outputs/demo --guidance_scales 1 2  # after `make demo`
    python benchmarks/sampler_quality_trained.py --model_dir outputs/fashion-mnist --classifier_reference data/fashion-mnist

The model: by default the unconditional digits model of `benchmarks/editing.py` (the demo config without labels,
cached in outputs/editing/model); `--model_dir` takes any saved digits pipeline, a class-conditional one with and
without guidance, or, with `--classifier_reference`, a pipeline of that labelled dataset (e.g. Fashion-MNIST). The reference: `--num_samples` images from ancestral DDPM with all 1000 steps (cached in the
model's folder as `ddpm1000_<guidance>_<n>.npy`). Each sampler then draws as many images from other noise at each
budget of model calls (with classifier-free guidance a call is one batched UNet pass of the conditional and
unconditional inputs); the distance is measured in the features of the digits classifier
(diffusers_simple_training.digits_classifier), or of the classifier of `training/evaluate.py`'s `classifier` metric
trained on `--classifier_reference`. Samplers: SimpleScheduler's default (UniPC on its warped log-SNR grid),
the same with grids calibrated on this model (`calibrate_pipeline`, 2 batches of 16), the same with calibrated time
shifts where a held-out batch confirms them (`shift_evaluations`), and the best
Diffusers multistep configurations of `sampler_accuracy.py` (DPMSolverMultistep 2M with Lu's lambdas; UniPC bh2
karras; DDIM trailing), swapped onto the same UNet. With `--classifier_reference`, a second table puts the same
samples against the real images of its test split: how close each sampler comes to the data, not to the model's
own DDPM distribution.
"""

import inspect
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_description, markdown_table, new_figure, parse_args, write_results
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from editing import CACHE, TRAIN_STEPS, split, tiny_model, train_model

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler
from diffusers_simple_training import evaluate
from diffusers_simple_training.calibrate import calibrate_pipeline, shift_pipeline
from diffusers_simple_training.digits_classifier import load_digits_classifier
from diffusers_simple_training.frechet import frechet_distance_from_features
from diffusers_simple_training.reference_classifier import classify

DIFFUSERS = {
    "DPMSolverMultistep 2M lu": lambda c: DPMSolverMultistepScheduler.from_config(c, use_lu_lambdas=True),
    "UniPCMultistep bh2 karras": lambda c: UniPCMultistepScheduler.from_config(c, use_karras_sigmas=True),
    "DDIMScheduler trailing": lambda c: DDIMScheduler.from_config(c, timestep_spacing="trailing"),
}


def add_model_arguments(parser, script: str):
    """--model_dir, --classifier_reference and --result_name, for `script`'s results."""
    parser.add_argument("--model_dir", type=Path, default=CACHE / "model", help="A saved pipeline.")
    parser.add_argument("--classifier_reference", type=str, default=None,
                        help="A labelled dataset of the model's images (e.g. data/fashion-mnist) whose classifier gives "
                             "the features; default: the digits classifier.")
    parser.add_argument("--result_name", type=str, default=None,
                        help=f"The result file's name (default: {script}, with _<model folder name> for another model "
                             "than the editing benchmark's).")


def add_arguments(parser):
    add_model_arguments(parser, "sampler_quality_trained")
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--calls", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10, 15, 20, 50])
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0], help="For a class-conditional model.")
    parser.add_argument("--shift_evaluations", type=int, default=400,
                        help="Solves per batch and budget that fit the calibrated time shifts (calibrate_model_timesteps).")
    parser.add_argument("--shift_budgets", type=int, nargs="+", default=None,
                        help="The budgets that get time shifts (default: every calibrated budget, up to 20 calls).")


def shown_path(path: Path) -> str:
    path = path.resolve()
    root = Path(__file__).resolve().parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def draw(pipe, num_samples: int, seed: int, guidance_scale: float, **kwargs) -> np.ndarray:
    """`num_samples` images in [-1, 1]; a class-conditional model gets the labels 0..9 in turn."""
    images = []
    for start in range(0, num_samples, 250):
        n = min(250, num_samples - start)
        generator = torch.Generator().manual_seed(seed + start)
        if pipe.unet.config.get("num_class_embeds"):
            kwargs.update(class_labels=[i % 10 for i in range(start, start + n)], guidance_scale=guidance_scale)
        out = pipe(batch_size=n, generator=generator, output_type="np", **kwargs).images
        images.append(np.round(out * 255) / 127.5 - 1)  # quantised like saved images
    return np.concatenate(images).transpose(0, 3, 1, 2).astype(np.float32)


def load_model(args) -> SimpleDiffusionPipeline:
    """The pipeline in `args.model_dir` (the editing benchmark's digits model, trained if missing), or with `--tiny` an
    in-process 40-step model."""
    if args.tiny:
        pipe = tiny_model(split()[0])
    else:
        if not (args.model_dir / "model_index.json").exists():
            train_model(args.model_dir, split()[4], TRAIN_STEPS)
        pipe = SimpleDiffusionPipeline.from_pretrained(args.model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_features(args, pipe):
    """The feature function (images in [-1, 1] -> classifier features), the classifier's name and, with
    `--classifier_reference`, the features of its real test images (else None)."""
    resolution = pipe.unet.config.sample_size
    if args.classifier_reference:
        options = evaluate.parse_args(["--pretrained_model_name_or_path", str(args.model_dir), "--reference", args.classifier_reference,
                                       "--reference_split", "test", "--pad_to_resolution"])
        classifier, settings, _ = evaluate.reference_classifier(options, resolution, pipe.unet.config.in_channels)
        classifier_name = settings["classifier"]
        test_images, _ = evaluate.load_reference(options, resolution, pipe.unet.config.in_channels, need_labels=False)
        test_reference = classify(classifier, evaluate.to_model_range(test_images))[0].numpy()  # the real data, held out
    else:
        classifier, _ = load_digits_classifier(resolution)
        classifier_name = "the digits classifier"
        test_reference = None

    def features(images):
        return classify(classifier, torch.from_numpy(images))[0].numpy()

    return features, classifier_name, test_reference


def ddpm_reference(pipe, args, guidance: float) -> np.ndarray:
    """`args.num_samples` images by ancestral DDPM with all 1000 steps, cached in the model's folder (not with --tiny)."""
    cached = args.model_dir / f"ddpm1000_{guidance:g}_{args.num_samples}.npy"
    if not args.tiny and cached.exists():
        return np.load(cached)
    ddpm = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(pipe.scheduler.config, sampler="ddpm"))
    ddpm.set_progress_bar_config(disable=True)
    images = draw(ddpm, args.num_samples, 0, guidance, num_inference_steps=1000)
    if not args.tiny:  # written whole or not at all: a killed run leaves no truncated cache behind
        partial = cached.with_name(cached.stem + ".partial.npy")
        np.save(partial, images)
        os.replace(partial, cached)
    return images


def default_sampler_config(pipe) -> dict:
    """The model's scheduler config with the package's current default sampler, whatever the checkpoint was saved with,
    and no calibrated grid."""
    defaults = inspect.signature(SimpleScheduler.__init__).parameters
    unipc_defaults = {k: defaults[k].default for k in ("sampler", "solver_order", "use_corrector", "last_lambda",
                                                        "last_lambda_growth", "last_lambda_growth_start", "lambda_spacing_power",
                                                        "analytic_first_step", "final_step_order", "final_step_type",
                                                        "final_step_tolerance")}
    config = dict(SimpleScheduler.from_config(pipe.scheduler.config, **unipc_defaults).config)
    config.update(calibrated_timesteps=None, calibrated_model_timesteps=None)
    return config


def main():
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    start = time.perf_counter()
    if args.tiny:  # a smoke test: an in-process 40-step model, nothing cached
        args.num_samples, args.calls, args.shift_evaluations = 20, [3, 5], 20
    pipe = load_model(args)
    features, classifier_name, test_reference = model_features(args, pipe)

    config = default_sampler_config(pipe)
    calibrated = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(config))
    budgets = [c for c in args.calls if c <= 20]
    calibration_start = time.perf_counter()
    calibrate_pipeline(calibrated, budgets, batch_size=16, num_batches=2)
    calibration_s = time.perf_counter() - calibration_start
    # the time shifts of calibrate_pipeline(..., shift_evaluations), fitted on the calibrated grids just made
    shift_budgets = [str(c) for c in (args.shift_budgets or budgets) if str(c) in calibrated.scheduler.config.calibrated_timesteps]
    shifted = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(calibrated.scheduler.config))
    shift_pipeline(shifted, shift_budgets, batch_size=16, num_batches=2, evaluations=args.shift_evaluations)
    shift_s = time.perf_counter() - calibration_start - calibration_s
    shifted_budgets = sorted(shifted.scheduler.config.calibrated_model_timesteps or {}, key=int)
    default = SimpleDiffusionPipeline(pipe.unet, SimpleScheduler.from_config(config))
    samplers = {"Simple default (UniPC)": default, "Simple calibrated": calibrated,
                "Simple calibrated + time shifts": shifted}
    samplers.update({name: SimpleDiffusionPipeline(pipe.unet, make(pipe.scheduler.config)) for name, make in DIFFUSERS.items()})
    for p in samplers.values():
        p.set_progress_bar_config(disable=True)

    tables, test_tables, (figure, axes) = [], [], new_figure(ncols=len(args.guidance_scales), width=5.5)
    for column, guidance in enumerate(args.guidance_scales):
        reference = features(ddpm_reference(pipe, args, guidance))
        cells = {(name, c): features(draw(p, args.num_samples, 10**6, guidance, num_inference_steps=c)) for name, p in samplers.items() for c in args.calls}
        distance = {cell: frechet_distance_from_features(reference, f) for cell, f in cells.items()}
        if test_reference is not None:  # the same samples against the real test images
            test_tables.append((guidance, [[name, *(frechet_distance_from_features(test_reference, cells[name, c]) for c in args.calls)] for name in samplers]))
        rows = [[name, *(distance[name, c] for c in args.calls)] for name in samplers]
        best = [min(DIFFUSERS, key=lambda n: distance[n, c]) for c in args.calls]
        rows.append(["best Diffusers", *(f"{distance[n, c]:.3g} ({n})" for n, c in zip(best, args.calls))])
        if 50 in args.calls and 5 in args.calls:
            rows.append(["Simple default: 5-call / 50-call distance", distance["Simple default (UniPC)", 5] / distance["Simple default (UniPC)", 50],
                         *[""] * (len(args.calls) - 1)])
        tables.append((guidance, rows))
        ax = axes[0, column]
        for name in samplers:
            ax.plot(args.calls, [distance[name, c] for c in args.calls], "-o", markersize=3, label=name,
                    linewidth=2.5 if name.startswith("Simple") else 1)
        ax.set(xscale="log", yscale="log", xlabel="model calls", ylabel="Fréchet distance to 1000-step DDPM",
               title=f"guidance {guidance:g}" if pipe.unet.config.get("num_class_embeds") else "unconditional")
        ax.legend(fontsize=7)

    headers = ["sampler"] + [f"{c} calls" for c in args.calls]
    # one result file per model: the default editing model's, and e.g. sampler_quality_trained_demo for outputs/demo
    name = args.result_name or "sampler_quality_trained" + ("" if args.tiny or args.model_dir == CACHE / "model" else f"_{args.model_dir.name}")
    body = "\n\n".join([f"guidance {g:g}:\n\n" + markdown_table(headers, rows) for g, rows in tables[1:]]
                       + [f"The same samples against the {len(test_reference)} real test images (guidance {g:g}; the table after this one is "
                           "the distance to the DDPM samples):\n\n" + markdown_table(headers, rows) for g, rows in test_tables])
    notes = f"""
Model {'(tiny, in-process)' if args.tiny else f'`{shown_path(args.model_dir)}`'}
({'class-conditional' if pipe.unet.config.get('num_class_embeds') else 'unconditional'}, {pipe.unet.config.sample_size}x{pipe.unet.config.sample_size}). Fréchet
distance in the features of {classifier_name} ({args.num_samples} samples per cell) to {args.num_samples} samples of
the same model by ancestral DDPM with 1000 steps (lower is better; part of it is sampling noise, so even an exact
sampler would not reach 0). Calibration of the grids on this model took {calibration_s:.0f} s; "Simple calibrated +
time shifts" then fits per-call model timesteps with the grids of {', '.join(shift_budgets)} calls ({args.shift_evaluations}
solves per budget; {shift_s:.0f} s in all), kept only where a held-out batch of 16 confirms them: here at
{', '.join(shifted_budgets) or 'no'} calls (the other budgets keep the calibrated grid).
{machine_description(args.num_threads)}; wall time {time.perf_counter() - start:.0f} s (`benchmarks/sampler_quality_trained.py`).
{'The last table: guidance %g.' % tables[0][0] if len(tables) > 1 else ''}
"""
    title = "Few-step sampling on a trained model" + ("" if args.tiny else f": {shown_path(args.model_dir)}") + (", also against the test set" if test_tables else "")
    write_results(args.output_dir, name, title, headers, tables[0][1], notes + ("\n" + body if body else ""), figure)


if __name__ == "__main__":
    main()
