"""training/evaluate.py and its metrics: Fréchet / kernel distances, the digits classifier, the NLL bound, FD-DINOv2,
the FID prerequisites check, and the command line end to end."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
from huggingface_hub import ModelCard
import scipy.linalg
import torch
from diffusers import DDPMScheduler
from diffusers.models.unets.unet_2d import UNet2DOutput
from scipy.stats import norm

from diffusers_simple import SimpleDiffusionPipeline, SimpleScheduler, SimpleUNet
from diffusers_simple_training import digits_classifier, evaluate, frechet, nll, reference_classifier

GRID = np.arange(256) / 127.5 - 1  # the 8-bit values in [-1, 1]


# --- Fréchet and kernel distances -----------------------------------------------------------------------------------


def test_frechet_distance_closed_form_for_commuting_covariances():
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_sqrtm_for_general_covariances():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    sigma1, sigma2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * scipy.linalg.sqrtm(sigma1 @ sigma2).real)
    assert frechet.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_from_samples_of_two_known_gaussians():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, size=(200_000, 2))
    y = rng.normal([3.0, 0.0], [2.0, 0.5], size=(200_000, 2))
    expected = 9.0 + (1 - 2) ** 2 + (1 - 0.5) ** 2  # = 10.25
    assert frechet.frechet_distance_from_features(x, y) == pytest.approx(expected, rel=5e-3)
    assert abs(frechet.frechet_distance_from_features(x, x)) < 1e-9


def test_frechet_distance_with_fewer_samples_than_features_is_finite():
    features = np.random.default_rng(0).normal(size=(10, 64))  # rank-deficient covariances, where sqrtm goes complex
    value = frechet.frechet_distance_from_features(features, features + 0.5)
    assert value == pytest.approx(64 * 0.25, rel=1e-6)  # a pure shift: only the mean term remains
    with pytest.raises(ValueError, match="num_samples >= 2"):
        frechet.feature_statistics(features[:1])


def test_kernel_distance_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    mean, std = frechet.kernel_distance(x, y, num_subsets=20, subset_size=200)
    shifted, _ = frechet.kernel_distance(x, y + 0.5, num_subsets=20, subset_size=200)
    assert abs(mean) < 3 * std + 1e-3  # unbiased: no positive offset for equal distributions
    assert shifted > 0.05 and shifted > 20 * abs(mean)


def test_kernel_distance_matches_the_polynomial_mmd_definition():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 3)), rng.normal(1.0, size=(7, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 7
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = frechet.kernel_distance(x, y, num_subsets=3, subset_size=100)  # subsets of all 7: always the same value
    assert mean == pytest.approx(within - 2 * cross, rel=1e-12) and std < 1e-12


# --- the digits classifier ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("diffusers_simple_cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFUSERS_SIMPLE_CACHE", path)
        yield path


def test_digits_classifier_trains_fast_caches_and_covers_real_digits(classifier_cache):
    model, accuracy = digits_classifier.load_digits_classifier(16)  # trains: ~3 s on two idle cores
    assert accuracy > 0.9
    assert os.listdir(classifier_cache) == [f"digits_classifier_v{reference_classifier.VERSION}_16px.safetensors"]

    cached, cached_accuracy = digits_classifier.load_digits_classifier(16)
    assert cached_accuracy == accuracy
    for name, value in model.state_dict().items():
        assert torch.equal(value, cached.state_dict()[name])

    images, labels = digits_classifier.digits_images(16)
    features, predictions = reference_classifier.classify(cached, images)
    assert features.shape == (1797, cached.num_features)
    assert (predictions == labels).double().mean() > 0.95
    coverage, entropy = reference_classifier.class_coverage(predictions)
    assert coverage == 1.0 and entropy == pytest.approx(math.log2(10), abs=0.02)
    # the digits Fréchet distance: ~0 against itself, large against a single repeated digit
    assert abs(frechet.frechet_distance_from_features(features, features)) < 1e-4  # rank-deficient: float64 noise only
    ones = images[labels == 1]
    collapsed, _ = reference_classifier.classify(cached, ones)
    assert frechet.frechet_distance_from_features(features, collapsed) > 10 * frechet.frechet_distance_from_features(
        features[:900], features[900:]
    )
    # RGB input is judged like its gray version
    rgb_features, _ = reference_classifier.classify(cached, images[:8].expand(-1, 3, -1, -1))
    torch.testing.assert_close(rgb_features, features[:8])


def test_class_coverage_of_collapsed_and_balanced_predictions():
    assert reference_classifier.class_coverage(torch.full((50,), 3)) == (0.1, 0.0)
    coverage, entropy = reference_classifier.class_coverage(torch.tensor([0, 1] * 10))
    assert coverage == 0.2 and entropy == pytest.approx(1.0)


# --- the NLL bound --------------------------------------------------------------------------------------------------


class AnalyticModel(torch.nn.Module):
    """A denoiser given as a function eps(x_t, t) of the float64 x_t and the per-image abar_t."""

    def __init__(self, scheduler, eps):
        super().__init__()
        self.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), dim=0)
        self.eps = eps

    def forward(self, sample, timestep):
        alpha_prod_t = self.alphas_cumprod[timestep].view(-1, 1, 1, 1)
        return UNet2DOutput(sample=self.eps(sample.double(), alpha_prod_t).float())


def gaussian_predictor(std):
    """The exact E[eps | x_t] for x_0 ~ N(0, std^2) per dimension."""
    return lambda x, abar: (1 - abar).sqrt() * x / (abar * std**2 + 1 - abar)


def discretized_gaussian(std):
    """The distribution of N(0, std^2) data stored as 8-bit images: the mass of each of the 256 bins."""
    edges = np.concatenate([[-np.inf], (GRID[:-1] + GRID[1:]) / 2, [np.inf]])
    return np.diff(norm.cdf(edges / std))


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_reverse_process_is_the_one_ddpm_scheduler_samples(variance_type, prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=50, variance_type=variance_type, prediction_type=prediction_type)
    scheduler.set_timesteps(50)
    coefficients = nll._Coefficients(scheduler, "cpu")
    x_t, model_output = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    for t in (1, 7, 30, 49):
        prev_sample = scheduler.step(model_output, t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t)).double()
        timesteps = torch.full((2,), t)
        alpha_prod_t = nll._per_image(coefficients.alphas_cumprod, timesteps)
        pred_x0 = nll.predict_original_sample(model_output.double(), x_t.double(), alpha_prod_t, prediction_type).clamp(-1, 1)
        mean = coefficients.posterior_mean(pred_x0, x_t.double(), timesteps)
        std = (0.5 * nll._per_image(coefficients.model_log_variance, timesteps)).exp()
        # DDPMScheduler works in float32, which costs ~1e-4 of 1 - abar_t at t = 1
        torch.testing.assert_close(prev_sample.double(), mean + std * noise, rtol=1e-4, atol=1e-4)


def test_discretized_gaussian_likelihood_is_normalized_and_exact_in_the_tails():
    x = torch.from_numpy(GRID)
    for mean, log_scale in ((0.3, math.log(0.01)), (-0.99, math.log(0.2)), (0.0, math.log(1e-3))):
        log_p = nll.discretized_gaussian_log_likelihood(x, torch.tensor(mean, dtype=torch.float64), torch.tensor(log_scale, dtype=torch.float64))
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    # 60 standard deviations away: scipy's log survival function, where a plain difference of CDFs underflows to -inf
    scale = 2 / 255
    value = nll.discretized_gaussian_log_likelihood(torch.tensor(0.0, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64), torch.tensor(math.log(scale), dtype=torch.float64))
    lower, upper = (0.5 - 1 / 255) / scale, (0.5 + 1 / 255) / scale
    expected = norm.logsf(lower) + np.log1p(-np.exp(norm.logsf(upper) - norm.logsf(lower)))
    assert value.item() == pytest.approx(expected, rel=1e-9)


def test_bound_of_a_gaussian_is_above_the_true_nll_and_tightest_for_the_optimal_predictor():
    std = 0.25
    probabilities = discretized_gaussian(std)
    true_nll = -(probabilities * np.log2(probabilities)).sum()  # bits/dim of 8-bit N(0, std^2) data
    images = torch.from_numpy(np.random.default_rng(0).choice(GRID, size=(128, 1, 4, 4), p=probabilities))
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)

    def bound(predictor_std):  # 100 stratified KL terms per image (the closed form below checks them, unbiased)
        model = AnalyticModel(scheduler, gaussian_predictor(predictor_std))
        return nll.variational_bound(model, scheduler, images, num_timesteps=100, generator=torch.Generator().manual_seed(0))

    optimal = bound(std)
    value, stderr = optimal.bits_per_dim.mean().item(), optimal.bits_per_dim.std().item() / math.sqrt(len(images))
    assert true_nll - 3 * stderr <= value <= true_nll + 1.0  # a bound, and not a loose one (the gap is ~0.8 here)
    assert optimal.prior_bits_per_dim.max() < 1e-4
    # common random numbers: the same noise for every predictor, so the comparison is sharp
    assert bound(0.8 * std).bits_per_dim.mean() > value + 0.02
    assert bound(1.25 * std).bits_per_dim.mean() > value + 0.02

    # the KL terms against their expectation over the noise, in closed form for a linear predictor:
    # x_0 - x0_pred = (1 - k a) x_0 - k b eps with a = sqrt(abar), b = sqrt(1 - abar), k = a std^2 / (a^2 std^2 + b^2)
    betas = scheduler.betas.double()
    abar = torch.cumprod(1 - betas, dim=0)  # in float64, like the bound (DDPMScheduler's float32 abar is off by ~1e-4 at t=1)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    a, b = abar.sqrt(), (1 - abar).sqrt()
    k = a * std**2 / (a**2 * std**2 + b**2)
    mean_error = (1 - k * a) ** 2 * (images**2).mean().item() + (k * b) ** 2
    coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
    posterior_variance = betas * (1 - abar_prev) / (1 - abar)
    expected = (coef_x0**2 * mean_error / (2 * posterior_variance))[1:].sum().item() / math.log(2)
    mc = optimal.diffusion_bits_per_dim
    assert mc.mean().item() == pytest.approx(expected, abs=4 * mc.std().item() / math.sqrt(len(images)))


@pytest.fixture(scope="module")
def oracle_setting():
    images = torch.from_numpy(np.random.default_rng(0).choice(GRID, size=(256, 1, 2, 2)))
    scheduler = DDPMScheduler(num_train_timesteps=100, variance_type="fixed_large")

    def oracle(x, abar):  # knows the clean images: returns the exact noise
        return (x - abar.sqrt() * images) / (1 - abar).sqrt()

    return images, scheduler, AnalyticModel(scheduler, oracle)


def test_exact_noise_predictor_gives_the_closed_form_bound_and_beats_garbage(oracle_setting):
    images, scheduler, oracle = oracle_setting
    out = nll.variational_bound(oracle, scheduler, images, generator=torch.Generator().manual_seed(0))
    # x0_pred = x_0, so each KL term is the variance mismatch only: 0.5 (log(beta / beta~) + beta~ / beta - 1) per dim
    betas = scheduler.betas.double()
    abar = torch.cumprod(1 - betas, dim=0)
    posterior_variance = betas[1:] * (1 - abar[:-1]) / (1 - abar[1:])
    per_term = 0.5 * ((betas[1:] / posterior_variance).log() + posterior_variance / betas[1:] - 1) / math.log(2)
    torch.testing.assert_close(out.diffusion_bits_per_dim, torch.full((256,), per_term.sum().item(), dtype=torch.float64))
    # and the decoder puts N(x_0, beta~_2) on x_0's bin: 2 Phi(half bin / sigma) - 1 inside [-1, 1]
    sigma = posterior_variance[0].sqrt().item()
    inner = -math.log2(2 * norm.cdf((1 / 255) / sigma) - 1)
    interior = (images.abs() < 1).flatten(1).all(1)
    torch.testing.assert_close(out.decoder_bits_per_dim[interior], torch.full((int(interior.sum()),), inner, dtype=torch.float64))

    zero = nll.variational_bound(AnalyticModel(scheduler, lambda x, abar: torch.zeros_like(x)), scheduler, images)
    garbage = nll.variational_bound(AnalyticModel(scheduler, lambda x, abar: torch.randn_like(x)), scheduler, images)
    for result in (out, zero, garbage):
        assert torch.isfinite(result.bits_per_dim).all() and (result.bits_per_dim > 0).all()
    assert zero.bits_per_dim.mean() > out.bits_per_dim.mean() + 2 and garbage.bits_per_dim.mean() > out.bits_per_dim.mean() + 2


def test_stratified_timesteps_are_an_unbiased_estimate(oracle_setting):
    images, scheduler, oracle = oracle_setting
    exact = nll.variational_bound(oracle, scheduler, images).diffusion_bits_per_dim[0].item()  # the same for every image
    estimate = nll.variational_bound(oracle, scheduler, images, num_timesteps=8, generator=torch.Generator().manual_seed(1))
    values = estimate.diffusion_bits_per_dim
    assert values.std() > 0  # the timesteps really are drawn per image
    assert values.mean().item() == pytest.approx(exact, abs=4 * values.std().item() / math.sqrt(len(values)))

    for num_strata in (1, 8, 50, 99, 500):
        strata = nll.timestep_strata(100, num_strata)
        assert len(strata) == min(num_strata, 99) and all(len(s) > 0 for s in strata)
        assert [t for s in strata for t in s] == list(range(1, 100))  # a partition of 1..T-1


def test_bound_rejects_images_off_the_8_bit_grid(oracle_setting):
    images, scheduler, oracle = oracle_setting
    with pytest.raises(ValueError, match="8-bit images scaled to"):
        nll.variational_bound(oracle, scheduler, images + 0.001)
    with pytest.raises(ValueError, match="num_timesteps"):
        nll.variational_bound(oracle, scheduler, images, num_timesteps=0)


# --- FD-DINOv2 and the FID prerequisites ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = str(tmp_path_factory.mktemp("tiny_dinov2"))
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=7)
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}).save_pretrained(path)
    return path


def test_dinov2_features_are_cls_tokens(tiny_dinov2):
    from transformers import AutoModel

    extractor = evaluate.DinoV2Features(tiny_dinov2, "cpu")
    images = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    features = extractor(images, batch_size=2)
    pixels = extractor.processor(images=list(images.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = AutoModel.from_pretrained(tiny_dinov2)(pixel_values=pixels).last_hidden_state[:, 0]
    assert features.shape == (5, 32)
    np.testing.assert_allclose(features, expected.double().numpy(), rtol=1e-5, atol=1e-5)


def test_fid_without_inception_exits_nonzero_saying_what_to_install(tmp_path):
    weights = tmp_path / "missing" / "inception.pth"
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([
            "--pretrained_model_name_or_path", "nowhere/model", "--output_dir", str(tmp_path), "--metrics", "fid", "kid",
            "--inception_weights", str(weights),
        ])
    message = exit_info.value.code
    assert isinstance(message, str)  # SystemExit("...") prints the message to stderr and exits with status 1
    assert f"The Inception weights are not at {weights}" in message
    assert evaluate.INCEPTION_WEIGHTS_URL in message and "--metrics digits nll" in message
    if importlib.util.find_spec("torch_fidelity") is None:
        assert 'pip install "torchmetrics>=1.8" torch-fidelity torchvision' in message
    assert os.listdir(tmp_path) == []  # failed before loading or writing anything


# --- the command line end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_end_to_end_on_a_saved_class_conditional_pipeline(tmp_path, hub_server, tiny_dinov2, classifier_cache):
    from diffusers_simple_training.digits import load_digits_dataset

    load_digits_dataset().select(range(24)).push_to_hub("someuser/eval-reference")  # a Hub dataset as the reference
    torch.manual_seed(0)
    unet = SimpleUNet(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                      attention_levels=(False, False), norm_num_groups=8, attention_head_dim=8, num_class_embeds=10)
    SimpleDiffusionPipeline(unet=unet, scheduler=SimpleScheduler(num_train_timesteps=50)).save_pretrained(tmp_path / "model")

    evaluate.main([
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--trust_remote_code",
        "--metrics", "fd_dinov2", "digits", "nll", "--reference", "someuser/eval-reference",
        "--dinov2_model", tiny_dinov2, "--scheduler", "simple-ddim", "--num_inference_steps", "2",
        "--num_samples", "12", "--batch_size", "8", "--nll_samples", "10", "--nll_timesteps", "4",
    ])
    with open(tmp_path / "model" / "eval_results.json") as f:
        results = json.load(f)
    settings = results.pop("settings")
    assert set(results) == {
        "fd_dinov2", "digits_fd", "digits_class_coverage", "digits_class_entropy_bits", "digits_label_accuracy",
        "nll_bits_per_dim", "nll_bits_per_dim_stderr",
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in results.values())
    assert results["fd_dinov2"] > 0 and results["digits_fd"] > 0 and results["nll_bits_per_dim"] > 0
    assert 0 < results["digits_class_coverage"] <= 1 and 0 <= results["digits_label_accuracy"] <= 1
    assert settings["scheduler"] == "SimpleScheduler (ddim)" and settings["num_reference"] == 24 and settings["nll_samples"] == 10
    assert settings["resolution"] == 16 and settings["reference"] == "someuser/eval-reference"
    assert (tmp_path / "model" / evaluate.GRID_NAME).is_file()


@pytest.mark.slow
def test_classifier_metrics_on_a_saved_labelled_dataset(tmp_path, classifier_cache):
    """`--metrics classifier` on a `save_to_disk` dataset with train/test splits (the layout of `make fashion-mnist`):
    the floor (as many training images as samples, against the test split) is far below the distance of an untrained
    model's samples."""
    import datasets

    from diffusers_simple_training.digits import load_digits_dataset

    digits = load_digits_dataset().train_test_split(test_size=300, seed=0)
    datasets.DatasetDict(train=digits["train"], test=digits["test"]).save_to_disk(str(tmp_path / "data"))
    torch.manual_seed(0)
    unet = SimpleUNet(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=8)
    SimpleDiffusionPipeline(unet=unet, scheduler=SimpleScheduler(num_train_timesteps=50)).save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("---\nlicense: mit\n---\n# A model\n")  # an exported pipeline's card

    results = evaluate.main([
        "--pretrained_model_name_or_path", str(tmp_path / "model"), "--metrics", "classifier",
        "--reference", str(tmp_path / "data"), "--reference_split", "test", "--num_inference_steps", "2",
        "--num_samples", "32", "--batch_size", "32",
    ]) or json.loads((tmp_path / "model" / "eval_results.json").read_text())
    settings = results.pop("settings")
    assert set(results) == {"classifier_fd", "classifier_fd_floor", "precision", "recall", "class_coverage", "class_entropy_bits"}
    assert settings["classifier_held_out_accuracy"] > 0.8 and settings["num_reference"] == 300
    # 32 training images against the test split: far below an untrained model's 32 samples (~5x here)
    assert 0 < results["classifier_fd_floor"] < results["classifier_fd"] / 3
    assert 0 <= results["precision"] <= 1 and 0 <= results["recall"] <= 1 and 0 < results["class_coverage"] <= 1
    assert any(name.startswith("data-train_classifier") for name in os.listdir(classifier_cache))
    card = ModelCard.load(tmp_path / "model" / "README.md")  # the measured metrics are in the card, text and metadata
    assert f"| classifier_fd | {results['classifier_fd']:.4g} |" in card.text and card.data.license == "mit"
    indexed = {r.metric_type for r in card.data.eval_results}  # the model's metrics; the floor measures the data
    assert indexed == set(results) - {"classifier_fd_floor"} and card.data.model_name == "model"
    assert settings["classifier"] == "SmallClassifier on data [train], 12 epochs"  # local folders by their names only
    assert str(tmp_path) not in card.content + (tmp_path / "model" / "eval_results.json").read_text()

    # The floor is measured at the sample size: with more samples (the test images themselves here) it shrinks.
    args = evaluate.parse_args(["--pretrained_model_name_or_path", str(tmp_path / "model"), "--reference", str(tmp_path / "data"),
                                "--reference_split", "test"])
    reference, _ = evaluate.load_reference(args, 8, 1, need_labels=False)
    floors = [evaluate.classifier_metrics(reference[:n], None, reference, args, 8, 1)[0]["classifier_fd_floor"] for n in (32, 256)]
    assert floors[0] == pytest.approx(results["classifier_fd_floor"]) and floors[1] < floors[0] / 2
