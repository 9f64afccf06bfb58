"""The benchmark scripts: the exact noise predictor of the sampler benchmark is checked against independent
computations of E[eps | x_t], and each script's `--tiny` run must print and write a well-formed table and plot."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers_simple import SimpleScheduler


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sampler_accuracy import ExactNoisePredictor, GaussianMixture  # noqa: E402


@pytest.fixture(scope="module")
def mixture() -> GaussianMixture:
    return GaussianMixture.random(dim=2, num_components=4, min_std=0.05, max_std=0.3, seed=3)


@pytest.mark.parametrize("alpha_bar", [0.9, 0.5, 0.1])
def test_noise_prediction_is_the_posterior_mean_of_the_noise(mixture, alpha_bar):
    # Monte Carlo, with nothing of the closed form: draw x_0 from the data and weight each by the likelihood
    # N(x_t; sqrt(abar) x_0, (1 - abar) I) of the given x_t; E[eps | x_t] is the weighted mean of
    # eps(x_0) = (x_t - sqrt(abar) x_0) / sqrt(1 - abar).
    generator = torch.Generator().manual_seed(0)
    x0 = mixture.sample(400_000, generator)
    x_t = math.sqrt(alpha_bar) * mixture.sample(8, generator) + math.sqrt(1 - alpha_bar) * torch.randn(8, 2, generator=generator, dtype=torch.float64)
    eps = (x_t[:, None, :] - math.sqrt(alpha_bar) * x0[None]) / math.sqrt(1 - alpha_bar)  # (8, M, 2)
    weights = torch.softmax(-0.5 * (eps**2).sum(-1), dim=1)  # likelihood of x_t given each x_0, normalised
    monte_carlo = (weights[..., None] * eps).sum(1)
    standard_error = ((weights[..., None] ** 2 * (eps - monte_carlo[:, None]) ** 2).sum(1)).sqrt()
    error = (mixture.noise_prediction(x_t, alpha_bar) - monte_carlo).abs()
    assert (error < 5 * standard_error + 1e-3).all(), (error, standard_error)


def test_noise_prediction_is_the_scaled_score_of_the_noised_mixture(mixture):
    # eps* = -sqrt(1 - abar) grad log q_t, with q_t built by torch.distributions and differentiated by autograd.
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    for alpha_bar in (0.9999, 0.9, 0.3, 1e-3):
        a = torch.tensor(alpha_bar, dtype=torch.float64)
        scale = (a * mixture.stds**2 + 1 - a).sqrt()[:, None].expand_as(mixture.means)
        components = torch.distributions.Independent(torch.distributions.Normal(a.sqrt() * mixture.means, scale), 1)
        q_t = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mixture.weights), components)
        (score,) = torch.autograd.grad(q_t.log_prob(x).sum(), x)
        torch.testing.assert_close(mixture.noise_prediction(x.detach(), alpha_bar), -(1 - a).sqrt() * score, rtol=1e-9, atol=1e-12)


def test_predictor_timesteps_follow_the_train_schedule(mixture):
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler().alphas_cumprod
    predictor = ExactNoisePredictor(mixture, alphas_cumprod)
    for t in (0, 1, 500, 998, 999):
        assert predictor.alpha_bar(t) == pytest.approx(alphas_cumprod[t].item(), rel=1e-6)
    # between train timesteps log sigma is linear, as in Diffusers' `_sigma_to_t`
    log_sigma = lambda abar: 0.5 * math.log((1 - abar) / abar)  # noqa: E731
    midpoint = 0.5 * (log_sigma(alphas_cumprod[10].item()) + log_sigma(alphas_cumprod[11].item()))
    assert log_sigma(predictor.alpha_bar(10.5)) == pytest.approx(midpoint, rel=1e-6)


def check_outputs(output_dir: Path, name: str, stdout: str, first_cells: list[str]) -> list[list[str]]:
    """Every markdown table (all also printed) is well formed; the last one, the main table, starts its rows with
    `first_cells` and is returned; the PNG exists."""
    markdown = (output_dir / f"{name}.md").read_text()
    lines = [line if line.startswith("|") else "" for line in markdown.splitlines()]
    assert "\n".join(line for line in lines if line) in stdout
    tables = [[[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()]
              for table in "\n".join(lines).split("\n\n") if table.strip()]
    for header, separator, *rows in tables:
        assert all(cell == "---" for cell in separator) and len(separator) == len(header)
        assert rows and all(len(row) == len(header) for row in rows)
    rows = tables[-1][2:]  # the main table's rows
    assert [row[0] for row in rows[: len(first_cells)]] == first_cells
    assert (output_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rows


def run_tiny(script: str, output_dir: Path) -> str:
    command = [sys.executable, str(REPO / "benchmarks" / script), "--tiny", "--num_threads", "1", "--output_dir", str(output_dir)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_sampler_accuracy_tiny(tmp_path):
    from sampler_accuracy import SIMPLE_CONFIGS, TRACKED, diffusers_configs

    stdout = run_tiny("sampler_accuracy.py", tmp_path)
    names = [*diffusers_configs(), *SIMPLE_CONFIGS, "best Diffusers", "best SimpleScheduler"]
    rows = check_outputs(tmp_path, "sampler_accuracy", stdout, names)
    for row in rows[: len(names) - 2]:
        ratios = [float(cell.split()[0]) for cell in row[1:]]
        assert all(0.5 < ratio < 100 for ratio in ratios), row  # distance / finite-sample floor
    # the default, the calibrated schedules and the best Diffusers configuration over 3 draws: mean +- standard error, the
    # mean within the range of the main table's rows
    markdown = (tmp_path / "sampler_accuracy.md").read_text()
    for name in TRACKED:
        precise = [line for line in markdown.splitlines() if line.startswith(f"| {name} |") and "±" in line]
        assert len(precise) == 1 and "over 3 draws" in markdown
        for cell in precise[0].strip("|").split("|")[1:]:
            mean, standard_error = (float(value) for value in cell.split("±"))
            assert 0.5 < mean < 100 and 0 <= standard_error < mean


@pytest.mark.slow
def test_train_throughput_tiny(tmp_path):
    stdout = run_tiny("train_throughput.py", tmp_path)
    rows = check_outputs(tmp_path, "train_throughput", stdout, ["SimpleUNet", "UNet2DModel"])
    for row in rows:
        parameters, gflops, images_per_second, ratio, memory = (float(cell) for cell in row[1:6])
        assert parameters > 0 and gflops > 0 and images_per_second > 0 and ratio > 0 and memory > 0
    assert float(rows[1][4]) == 1.0


@pytest.mark.slow
def test_sampling_speed_tiny(tmp_path):
    stdout = run_tiny("sampling_speed.py", tmp_path)
    rows = check_outputs(tmp_path, "sampling_speed", stdout, [])
    assert len(rows) == 7
    for row in rows:
        assert all(float(cell) > 0 for cell in row[1:]), row


@pytest.mark.slow
def test_time_to_quality_tiny(tmp_path):
    stdout = run_tiny("time_to_quality.py", tmp_path)
    recipes = ["this project (train.py defaults)"] + ["official Diffusers recipe"] * 3
    rows = check_outputs(tmp_path, "time_to_quality", stdout, recipes)
    assert len(rows) == 5 and rows[-1][0].startswith("real digits")
    for row in rows[:4]:
        parameters, steps, (wall_time, cpu_time) = float(row[1]), int(row[2]), map(float, row[3].split(" / "))
        assert parameters > 0 and steps >= 2 and wall_time > 0 and cpu_time > 0
    assert all(float(row[5]) > 0 for row in rows)  # digits Fréchet distances


@pytest.mark.slow
def test_editing_tiny(tmp_path):
    stdout = run_tiny("editing.py", tmp_path)
    rows = check_outputs(tmp_path, "editing", stdout, ["classifier"])
    tasks = {row[0] for row in rows}
    assert {"inpaint top half", "inpaint bottom half", "inversion", "speed, batch 32"} <= tasks
    assert sum(row[1].startswith("baseline") for row in rows) == 4
    for row in rows:
        assert float(row[3]) >= 0, row


@pytest.mark.slow
def test_sampler_quality_trained_tiny(tmp_path):
    from sampler_quality_trained import DIFFUSERS

    stdout = run_tiny("sampler_quality_trained.py", tmp_path)
    names = ["Simple default (UniPC)", "Simple calibrated", "Simple calibrated + time shifts", *DIFFUSERS, "best Diffusers"]
    rows = check_outputs(tmp_path, "sampler_quality_trained", stdout, names)
    for row in rows[:-1]:
        assert all(float(cell) > 0 for cell in row[1:]), row  # Fréchet distances to the 1000-step DDPM samples


@pytest.mark.slow
def test_grid_transfer_tiny(tmp_path):
    from sampler_accuracy import BENCHMARKS

    stdout = run_tiny("grid_transfer.py", tmp_path)
    names = ["default (no calibrated grid)", "calibrated on the model", *(f"calibrated on {name}" for name in BENCHMARKS)]
    rows = check_outputs(tmp_path, "grid_transfer", stdout, names)
    for row in rows:
        ratios, frechet = [float(cell) for cell in row[1:-1]], float(row[-1])
        assert all(0.5 < ratio < 100 for ratio in ratios) and frechet > 0, row  # mixtures: distance / floor
    # each calibrated grid is stated in lambda, one value per model call, falling toward the data
    markdown = (tmp_path / "grid_transfer.md").read_text()
    stated = [line for line in markdown.splitlines() if line.startswith("- calibrated on ")]
    assert len(stated) == len(names) - 1
    for line in stated:
        lambdas = [float(value) for value in line.split("3 calls [")[1].rstrip("]").split(",")]
        assert len(lambdas) == 3 and lambdas == sorted(lambdas), line


def test_grid_transfer_keeps_the_half_log_snr():
    from grid_transfer import lambdas_of, transfer

    linear, cosine = SimpleScheduler(), SimpleScheduler(beta_schedule="squaredcos_cap_v2")
    grids = {"3": [811.7, 400.25, 18.0]}
    assert transfer(grids, linear, linear)["3"] == pytest.approx(grids["3"], abs=1e-9)
    moved = transfer(grids, linear, cosine)["3"]
    assert moved != pytest.approx(grids["3"], abs=1.0)  # another schedule: other timesteps ...
    lambdas = [lambdas_of(t, s) for t, s in ((grids["3"], linear), (moved, cosine))]
    assert lambdas[1] == pytest.approx(lambdas[0], abs=0.02)  # ... at the same noise level (linear interpolation)


def test_time_to_reach_interpolates_in_log_log():
    from time_to_quality_fashion_mnist import time_to_reach

    curve = {5: 10.0, 10: 5.0, 20: 3.0}
    assert time_to_reach(curve, 6.67) == pytest.approx(5 * 2 ** (math.log(10 / 6.67) / math.log(2)))  # between 5 and 10
    assert time_to_reach(curve, 5.0) == pytest.approx(10.0)
    assert time_to_reach(curve, 12.0) == 5  # already at the first budget
    assert time_to_reach(curve, 2.0) is None  # never
