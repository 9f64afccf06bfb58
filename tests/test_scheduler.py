"""SimpleScheduler against Diffusers' DDPM, DDIM and DPMSolverMultistep schedulers (CPU, offline, ~10 s)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from diffusers_simple.scheduling_simple import SimpleScheduler, SimpleSchedulerOutput


ATOL = 1e-5
SHAPE = (2, 3, 8, 8)

# raised inside DPMSolverMultistepScheduler.set_timesteps with numpy 2, not by this package
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def make_model(scheduler):
    """A fixed stand-in for a trained network, a smooth function of (x_t, t): the exact denoiser for data
    x_0 ~ N(0.3, 1) under the scheduler's noise schedule plus a bounded nonlinear term, expressed in the
    scheduler's `prediction_type`. Its x_0 predictions stay O(1), so atol 1e-5 is a tight tolerance."""
    alphas_cumprod, prediction_type = scheduler.alphas_cumprod, scheduler.config.prediction_type
    mean, var = 0.3, 1.0

    def model(x, t):
        abar = abar_at(alphas_cumprod, t)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        x0 = mean + alpha * var * (x - alpha * mean) / (alpha**2 * var + sigma**2)  # E[x_0 | x_t]
        x0 = x0 + 0.2 * sigma * torch.sin(3 * x)
        eps = (x - alpha * x0) / sigma
        return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction_type]

    return model


def abar_at(alphas_cumprod, t):
    """abar at a train timestep, or between two by linear interpolation of log sigma (fractional timesteps)."""
    t = torch.as_tensor(t)
    if not t.is_floating_point() or t == t.round():
        return alphas_cumprod[int(t)]
    low = int(t.floor())
    log_sigma = 0.5 * torch.log((1 - alphas_cumprod.double()) / alphas_cumprod.double())
    w = float(t) - low
    return torch.sigmoid(-2 * ((1 - w) * log_sigma[low] + w * log_sigma[low + 1])).float()


def initial_noise(seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return randn_tensor(SHAPE, generator=generator) * scale, generator


def denoise(scheduler, start=0, x=None, step_kwargs=None, seed=0):
    """Run the sampling loop from `scheduler.timesteps[start]` on; return every step's output."""
    model = make_model(scheduler)
    noise, generator = initial_noise(seed)
    x = noise if x is None else x
    outputs = []
    for t in scheduler.timesteps[start:]:
        kwargs = {} if isinstance(scheduler, UniPCMultistepScheduler) else {"generator": generator}
        out = scheduler.step(model(x, t), t, x, **kwargs, **(step_kwargs or {}))
        x = out.prev_sample
        outputs.append(out)
    return outputs


def assert_same_trajectory(ours, ref, atol=ATOL):
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=atol, msg=f"step {i}")


def assert_same_schedule(a, b):
    assert torch.equal(a.betas, b.betas)
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod)


# ---------------------------------------------------------------------------------------------------------------
# sampler="ddpm" vs DDPMScheduler


def ddpm_trajectory_of_reference(ref):
    """DDPMScheduler's trajectory, minus the noise it adds on the last step when that timestep is > 0.

    Ho et al. Algorithm 2 adds no noise on the last step (z = 0); DDPMScheduler adds it whenever t > 0, which with
    "trailing" spacing puts noise of variance beta_t (fixed_large) into the final sample. SimpleScheduler follows the
    paper, so the reference's last noise draw is replayed and removed here.
    """
    model = make_model(ref)
    x, generator = initial_noise()
    outputs = []
    for i, t in enumerate(ref.timesteps):
        last = i == len(ref.timesteps) - 1
        state = generator.get_state()
        out = ref.step(model(x, t), t, x, generator=generator)
        if last and t > 0:
            replay = torch.Generator().set_state(state)
            noise = randn_tensor(SHAPE, generator=replay)
            out.prev_sample = out.prev_sample - ref._get_variance(t) ** 0.5 * noise
        x = out.prev_sample
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(
    "num_inference_steps, timestep_spacing",
    # with 1000 of 1000 steps every spacing gives 999, ..., 0 (checked below), so one run covers them
    [(1000, "leading"), (50, "linspace"), (50, "leading"), (50, "trailing")],
)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_matches_diffusers(prediction_type, num_inference_steps, timestep_spacing, variance_type):
    config = dict(
        prediction_type=prediction_type, timestep_spacing=timestep_spacing, variance_type=variance_type,
        clip_sample=False,
    )
    ours, ref = SimpleScheduler(sampler="ddpm", **config), DDPMScheduler(**config)
    ours.set_timesteps(num_inference_steps)
    ref.set_timesteps(num_inference_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert_same_trajectory(denoise(ours), ddpm_trajectory_of_reference(ref))


def test_all_spacings_agree_on_the_full_chain():
    for spacing in ("linspace", "leading", "trailing"):
        scheduler = SimpleScheduler(sampler="ddpm", timestep_spacing=spacing)
        scheduler.set_timesteps(1000)
        assert torch.equal(scheduler.timesteps, torch.arange(999, -1, -1)), spacing


def test_ddpm_last_step_is_the_posterior_mean():
    # DDPMScheduler with fixed_large and trailing spacing ends on t=19 and adds noise of std sqrt(beta) there.
    config = dict(variance_type="fixed_large", timestep_spacing="trailing", clip_sample=False)
    ours, ref = SimpleScheduler(sampler="ddpm", **config), DDPMScheduler(**config)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    x, _ = initial_noise(seed=3)
    t = ours.timesteps[-1]
    assert t == 19
    model_output = make_model(ours)(x, t)
    out = ours.step(model_output, t, x, generator=torch.Generator().manual_seed(1))
    ref_out = ref.step(model_output, t, x, generator=torch.Generator().manual_seed(1))
    # with abar_prev = 1 the posterior mean is x_0 itself
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample, rtol=0, atol=ATOL)
    assert (ref_out.prev_sample - out.prev_sample).std() > 0.05


@pytest.mark.parametrize(
    "config",
    [
        dict(clip_sample=True, clip_sample_range=0.5),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
        dict(prediction_type="sample"),
        dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(beta_schedule="squaredcos_cap_v2", timestep_spacing="leading", steps_offset=1),
        dict(beta_schedule="sigmoid", num_train_timesteps=200),
    ],
)
def test_ddpm_options_match_diffusers(config):
    config = {"clip_sample": False, "timestep_spacing": "trailing", **config}
    ours, ref = SimpleScheduler(sampler="ddpm", **config), DDPMScheduler(**config)
    assert_same_schedule(ours, ref)
    ours.set_timesteps(25)
    ref.set_timesteps(25)
    assert torch.equal(ours.timesteps, ref.timesteps)
    ours_outputs = denoise(ours)
    assert_same_trajectory(ours_outputs, ddpm_trajectory_of_reference(ref))
    if config.get("clip_sample") or config.get("thresholding"):
        bound = config.get("clip_sample_range", 1.0) if config.get("clip_sample") else 1.0
        assert max(out.pred_original_sample.abs().max() for out in ours_outputs) <= bound + 1e-6
    if config.get("thresholding"):  # the dynamic threshold s rises above 1 on some steps: not plain clipping
        clipped = SimpleScheduler(sampler="ddpm", clip_sample=True, timestep_spacing="trailing")
        clipped.set_timesteps(25)
        assert (denoise(clipped)[-1].prev_sample - ours_outputs[-1].prev_sample).abs().max() > 1e-3


def test_custom_timesteps_match_diffusers():
    timesteps = [999, 700, 420, 300, 101, 50, 3, 0]
    ours, ref = SimpleScheduler(sampler="ddpm"), DDPMScheduler(clip_sample=False)
    ours.set_timesteps(timesteps=timesteps)
    ref.set_timesteps(timesteps=timesteps)
    assert ours.num_inference_steps == len(timesteps)
    assert_same_trajectory(denoise(ours), ddpm_trajectory_of_reference(ref))


# ---------------------------------------------------------------------------------------------------------------
# sampler="ddim" vs DDIMScheduler


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("timestep_spacing", ["leading", "trailing"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_matches_diffusers(eta, timestep_spacing, prediction_type, set_alpha_to_one):
    config = dict(
        timestep_spacing=timestep_spacing, prediction_type=prediction_type, set_alpha_to_one=set_alpha_to_one,
        clip_sample=False,
    )
    ours, ref = SimpleScheduler(sampler="ddim", eta=eta, **config), DDIMScheduler(**config)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert_same_trajectory(denoise(ours), denoise(ref, step_kwargs=dict(eta=eta)))


@pytest.mark.parametrize(
    "config",
    [
        dict(clip_sample=True, clip_sample_range=0.8),
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
        dict(prediction_type="sample"),
        dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"),
    ],
)
def test_ddim_options_match_diffusers(config):
    config = {"clip_sample": False, "timestep_spacing": "leading", **config}
    ours, ref = SimpleScheduler(sampler="ddim", **config), DDIMScheduler(**config)
    ours.set_timesteps(20)
    ref.set_timesteps(20)
    assert torch.equal(ours.timesteps, ref.timesteps)
    # `eta` given to step() overrides config.eta (0 here)
    assert_same_trajectory(denoise(ours, step_kwargs=dict(eta=0.5)), denoise(ref, step_kwargs=dict(eta=0.5)))


def test_ddim_linspace_steps_to_the_actual_previous_timestep():
    ours = SimpleScheduler(sampler="ddim", timestep_spacing="linspace")
    ref = DDIMScheduler(timestep_spacing="linspace", clip_sample=False)
    ours.set_timesteps(7)
    ref.set_timesteps(7)
    assert ours.timesteps.tolist() == ref.timesteps.tolist() == [999, 832, 666, 500, 333, 166, 0]
    assert ours.previous_timestep(999) == 832
    # DDIMScheduler steps with the stride 1000 // 7 = 142: from 999 to 857, a timestep not in the schedule
    # (diffusers issues 11347, 12633), so its samples differ.
    assert 999 - ref.config.num_train_timesteps // ref.num_inference_steps == 857
    ours_ddim = denoise(ours)
    assert (ours_ddim[-1].prev_sample - denoise(ref)[-1].prev_sample).abs().max() > 1e-2

    # eta=0: DDIM is DPM-Solver++(1) (Lu et al.), which DPMSolverMultistepScheduler runs on explicit timesteps
    dpm = DPMSolverMultistepScheduler(solver_order=1)
    dpm.set_timesteps(timesteps=ours.timesteps.tolist())
    assert_same_trajectory(ours_ddim, denoise(dpm))

    # eta=1: DDIM is the DDPM posterior (fixed_small), which DDPMScheduler steps by lookup
    ddpm = DDPMScheduler(timestep_spacing="linspace", clip_sample=False)
    ddpm.set_timesteps(7)
    assert_same_trajectory(denoise(ours, step_kwargs=dict(eta=1.0)), denoise(ddpm))


# ---------------------------------------------------------------------------------------------------------------
# sampler="dpmsolver++" vs DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")


def dpm_pair(solver_order, **config):
    # DPMSolverMultistep's default spacing is its own "linspace"; compare on spaced (not log-SNR) timesteps
    config = {"timestep_spacing": "trailing", "use_lu_lambdas": False, **config}
    ours = SimpleScheduler(sampler="dpmsolver++", solver_order=solver_order, **config)
    ref = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=solver_order, **config)
    return ours, ref


@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("num_inference_steps", [10, 20])  # below 15: lower-order final steps
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpmsolver_matches_diffusers(solver_order, num_inference_steps, prediction_type):
    ours, ref = dpm_pair(solver_order, prediction_type=prediction_type, timestep_spacing="trailing")
    ours.set_timesteps(num_inference_steps)
    ref.set_timesteps(num_inference_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert_same_trajectory(denoise(ours), denoise(ref))


@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("timestep_spacing", ["linspace", "leading"])
def test_dpmsolver_matches_diffusers_on_explicit_timesteps(solver_order, timestep_spacing):
    # DPMSolverMultistep defines "linspace" / "leading" differently from DDPMScheduler; compare on our timesteps
    ours, ref = dpm_pair(solver_order, timestep_spacing=timestep_spacing)
    ours.set_timesteps(12)
    ref.set_timesteps(timesteps=ours.timesteps.tolist())
    assert_same_trajectory(denoise(ours), denoise(ref))


@pytest.mark.parametrize("solver_order", [2, 3])
@pytest.mark.parametrize("num_inference_steps", [10, 20])
def test_dpmsolver_final_step_to_sigma_min(solver_order, num_inference_steps):
    ours = SimpleScheduler(
        sampler="dpmsolver++", solver_order=solver_order, set_alpha_to_one=False, use_lu_lambdas=False
    )
    ref = DPMSolverMultistepScheduler(
        solver_order=solver_order, final_sigmas_type="sigma_min", timestep_spacing="trailing"
    )
    ours.set_timesteps(num_inference_steps)
    ref.set_timesteps(num_inference_steps)
    assert_same_trajectory(denoise(ours), denoise(ref))


@pytest.mark.parametrize(
    "config",
    [
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
        dict(prediction_type="sample"),
        dict(lower_order_final=False, solver_order=3),
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    ],
)
def test_dpmsolver_options_match_diffusers(config):
    config = {"solver_order": 2, **config}
    ours, ref = dpm_pair(timestep_spacing="trailing", **config)
    ours.set_timesteps(8)
    ref.set_timesteps(8)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert_same_trajectory(denoise(ours), denoise(ref))


def test_dpmsolver_zero_terminal_snr_is_finite_and_close_to_diffusers():
    # DPMSolverMultistep replaces abar_T = 0 by 2**-24; SimpleScheduler takes the exact limit lambda_T = -inf
    ours, ref = dpm_pair(2, rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    ours_outputs, ref_outputs = denoise(ours), denoise(ref)
    assert all(torch.isfinite(out.prev_sample).all() for out in ours_outputs)
    assert_same_trajectory(ours_outputs, ref_outputs, atol=1e-3)


def test_dpmsolver_can_start_mid_schedule_like_diffusers():
    # img2img-style: the first step is timesteps[4]; both start a fresh multistep history there
    ours, ref = dpm_pair(3)
    ours.set_timesteps(20)
    ref.set_timesteps(20)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x, _ = initial_noise(seed=5, scale=0.6)
    assert_same_trajectory(denoise(ours, start=4, x=x), denoise(ref, start=4, x=x))


@pytest.mark.parametrize("sampler", ["dpmsolver++", "unipc"])
def test_multistep_history_restarts_with_the_schedule(sampler):
    ours = SimpleScheduler(sampler=sampler, solver_order=3)
    ours.set_timesteps(10)
    first, again = denoise(ours), denoise(ours)  # no set_timesteps in between
    assert_same_trajectory(first, again, atol=0)


@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("num_inference_steps", [5, 10, 25])
def test_use_lu_lambdas_matches_diffusers(solver_order, num_inference_steps):
    # the same timesteps, and the same unrounded log-SNR sigmas to step with: the same samples
    ours = SimpleScheduler(sampler="dpmsolver++", solver_order=solver_order)
    ref = DPMSolverMultistepScheduler(use_lu_lambdas=True, solver_order=solver_order)
    ours.set_timesteps(num_inference_steps)
    ref.set_timesteps(num_inference_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert_same_trajectory(denoise(ours), denoise(ref))


def test_use_lu_lambdas_only_for_dpmsolver():
    for sampler in ("ddpm", "ddim"):
        scheduler = SimpleScheduler(sampler=sampler, timestep_spacing="trailing")
        scheduler.set_timesteps(10)
        assert scheduler.timesteps.tolist() == list(range(999, 0, -100)), sampler
    dpm = SimpleScheduler(sampler="dpmsolver++", use_lu_lambdas=False, timestep_spacing="trailing")
    dpm.set_timesteps(10)
    assert dpm.timesteps.tolist() == list(range(999, 0, -100))


def test_use_lu_lambdas_keeps_repeated_timesteps_like_diffusers():
    # num_inference_steps is the number of model calls: 50 of 50 gives 50 (rounded, some repeated, as Diffusers)
    ours = SimpleScheduler(sampler="dpmsolver++", num_train_timesteps=50)
    ref = DPMSolverMultistepScheduler(num_train_timesteps=50, use_lu_lambdas=True)
    ours.set_timesteps(50)
    ref.set_timesteps(50)
    assert ours.num_inference_steps == len(ours.timesteps) == 50
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert len(set(ours.timesteps.tolist())) < 50
    assert all(torch.isfinite(out.prev_sample).all() for out in denoise(ours))


# ---------------------------------------------------------------------------------------------------------------
# forward process


def test_add_noise_and_velocity_match_ddpm():
    ours, ref = SimpleScheduler(), DDPMScheduler()
    x0, noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), torch.randn(SHAPE)
    timesteps = torch.tensor([0, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, timesteps), ref.add_noise(x0, noise, timesteps))
    torch.testing.assert_close(ours.get_velocity(x0, noise, timesteps), ref.get_velocity(x0, noise, timesteps))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_noise_computes_in_float32(dtype):
    ours = SimpleScheduler()
    x0, noise = torch.randn(SHAPE).to(dtype), torch.randn(SHAPE).to(dtype)
    timesteps = torch.tensor([3, 500])
    noisy = ours.add_noise(x0, noise, timesteps)
    assert noisy.dtype == dtype
    expected = DDPMScheduler().add_noise(x0.float(), noise.float(), timesteps).to(dtype)
    assert torch.equal(noisy, expected)


def test_step_computes_in_float32_and_returns_sample_dtype():
    scheduler = SimpleScheduler(sampler="ddpm")
    scheduler.set_timesteps(10)
    x, _ = initial_noise()
    t = scheduler.timesteps[0]
    model_output = make_model(scheduler)(x, t)
    out = scheduler.step(model_output.half(), t, x.half(), generator=torch.Generator().manual_seed(0))
    expected = scheduler.step(
        model_output.half().float(), t, x.half().float(), generator=torch.Generator().manual_seed(0)
    )
    assert out.prev_sample.dtype == out.pred_original_sample.dtype == torch.float16
    assert torch.equal(out.prev_sample, expected.prev_sample.half())
    prev, x0 = scheduler.step(model_output, t, x, generator=torch.Generator(), return_dict=False)
    assert isinstance(out, SimpleSchedulerOutput) and prev.shape == x0.shape == SHAPE


def test_scheduler_basics():
    scheduler = SimpleScheduler()
    assert len(scheduler) == 1000 and scheduler.order == 1 and scheduler.init_noise_sigma == 1.0
    x = torch.randn(SHAPE)
    assert scheduler.scale_model_input(x, 5) is x
    assert {"DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"} <= set(scheduler._compatibles)
    assert {DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler} <= set(scheduler.compatibles)
    assert scheduler.config.sampler == "unipc" and scheduler.config.solver_order == 2
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.clip_sample is False
    assert scheduler.config.use_lu_lambdas is True


# ---------------------------------------------------------------------------------------------------------------
# interop through from_config (in memory) and save_pretrained / from_pretrained (files)

SCHEDULE_CONFIGS = [
    dict(),
    dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(num_train_timesteps=100, beta_schedule="linear_rescaled"),
    dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
]
DIFFUSERS_CLASSES = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler]


def convert(scheduler, cls, through_files, tmp_path, **kwargs):
    if not through_files:
        return cls.from_config(scheduler.config, **kwargs)
    scheduler.save_pretrained(tmp_path)
    return cls.from_pretrained(tmp_path, **kwargs)


def same_schedule_expected(cls, config):
    # DPMSolverMultistep sets abar_T = 2**-24 instead of 0 under rescale_betas_zero_snr
    return not (cls is DPMSolverMultistepScheduler and config.get("rescale_betas_zero_snr"))


@pytest.mark.parametrize("through_files", [False, True])
@pytest.mark.parametrize("cls", DIFFUSERS_CLASSES)
@pytest.mark.parametrize("config", SCHEDULE_CONFIGS)
def test_to_diffusers_keeps_the_schedule(config, cls, through_files, tmp_path):
    ours = SimpleScheduler(**config)
    theirs = convert(ours, cls, through_files, tmp_path)
    if same_schedule_expected(cls, config):
        assert_same_schedule(ours, theirs)
    else:
        assert torch.equal(ours.betas, theirs.betas)
    back = convert(theirs, SimpleScheduler, through_files, tmp_path / "back")
    assert_same_schedule(ours, back)


@pytest.mark.parametrize("through_files", [False, True])
@pytest.mark.parametrize("cls", DIFFUSERS_CLASSES)
@pytest.mark.parametrize("config", [c for c in SCHEDULE_CONFIGS if c.get("beta_schedule") != "linear_rescaled"])
def test_from_diffusers_keeps_the_schedule(config, cls, through_files, tmp_path):
    theirs = cls(**config)
    ours = convert(theirs, SimpleScheduler, through_files, tmp_path)
    if same_schedule_expected(cls, config):
        assert_same_schedule(ours, theirs)
    back = convert(ours, cls, through_files, tmp_path / "back")
    assert_same_schedule(theirs, back)


def test_linear_rescaled_schedule():
    scheduler = SimpleScheduler(beta_schedule="linear_rescaled", num_train_timesteps=100)
    torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([0.001, 0.2]))
    assert scheduler.alphas_cumprod[-1] < 1e-4  # a 100-step chain still ends in (nearly) pure noise
    assert scheduler.config.trained_betas == scheduler.betas.tolist()
    assert "trained_betas" not in scheduler.config["_use_default_values"]


@pytest.mark.parametrize("through_files", [False, True])
def test_shared_keys_carry_over(through_files, tmp_path):
    # DDPMScheduler's default clip_sample=True is written to its saved config, but an in-memory config lists it
    # in `_use_default_values`, and from_config then uses SimpleScheduler's default (False)
    ours = convert(DDPMScheduler(), SimpleScheduler, through_files, tmp_path / "default")
    assert ours.config.clip_sample is through_files

    ddpm = DDPMScheduler(
        variance_type="fixed_large", prediction_type="v_prediction", timestep_spacing="linspace", clip_sample=True
    )
    ours = convert(ddpm, SimpleScheduler, through_files, tmp_path, sampler="ddpm")
    assert (ours.config.variance_type, ours.config.prediction_type) == ("fixed_large", "v_prediction")
    assert ours.config.clip_sample is True
    ours.set_timesteps(20)
    ddpm.set_timesteps(20)
    assert_same_trajectory(denoise(ours), ddpm_trajectory_of_reference(ddpm))

    ours = SimpleScheduler(solver_order=3, prediction_type="v_prediction", timestep_spacing="trailing")
    dpm = convert(ours, DPMSolverMultistepScheduler, through_files, tmp_path / "dpm")
    assert (dpm.config.solver_order, dpm.config.prediction_type) == (3, "v_prediction")
    assert dpm.config.use_lu_lambdas is True  # the log-SNR steps carry over to Diffusers' DPM-Solver
    assert dpm.config.timestep_spacing == "trailing" and dpm.config.algorithm_type == "dpmsolver++"
    back = convert(dpm, SimpleScheduler, through_files, tmp_path / "back")  # its variance_type=None is accepted
    assert back.config.solver_order == 3 and back.config.sampler == ours.config.sampler == "unipc"


def test_own_save_and_load(tmp_path):
    scheduler = SimpleScheduler(sampler="ddim", eta=0.3, beta_schedule="linear_rescaled", num_train_timesteps=100)
    scheduler.save_pretrained(tmp_path)
    loaded = SimpleScheduler.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    assert_same_schedule(scheduler, loaded)


# ---------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sampler="euler"), ["'euler'", "'ddpm'", "'ddim'", "'dpmsolver++'"]),
        (dict(beta_schedule="cosine"), ["'cosine'", "'squaredcos_cap_v2'", "'linear_rescaled'"]),
        (dict(prediction_type="flow_prediction"), ["'flow_prediction'", "'epsilon'", "'v_prediction'"]),
        (dict(timestep_spacing="karras"), ["'karras'", "'trailing'", "'leading'"]),
        (dict(variance_type="learned_range"), ["'learned_range'", "'fixed_small'", "'fixed_large'"]),
        (dict(solver_order=4), ["solver_order=4", "1, 2, 3"]),
        (dict(final_step_order=4), ["final_step_order=4", "1, 2, 3"]),
        (dict(final_step_type="exact"), ["final_step_type='exact'", "'auto'", "'gaussian'", "'polynomial'"]),
        (dict(final_step_tolerance=-0.1), ["final_step_tolerance=-0.1", ">= 0"]),
        (dict(final_step_tolerance=float("nan")), ["final_step_tolerance=nan", "finite"]),
        (dict(solver_order=0), ["solver_order=0", "1, 2, 3"]),
        (dict(eta=1.5), ["eta=1.5", "0 <= eta <= 1"]),
        (dict(trained_betas=[0.1, 0.2], num_train_timesteps=3), ["2 values", "num_train_timesteps=3"]),
        (dict(beta_schedule="linear_rescaled", num_train_timesteps=10), ["'linear_rescaled'", "outside (0, 1)"]),
        (dict(trained_betas=[0.5, 1.5], num_train_timesteps=2), ["trained_betas", "outside (0, 1)", "1.5"]),
        # issue 8: settings that can only give NaN samples
        (dict(beta_end=1.0), ["beta_end=1.0", "outside (0, 1)", "0 < beta < 1"]),
        (dict(beta_start=0.0), ["beta_start=0.0", "outside (0, 1)", "0 < beta < 1"]),
        (dict(trained_betas=[0.0] * 4, num_train_timesteps=4), ["trained_betas", "outside (0, 1)", "0 < beta < 1"]),
        (dict(trained_betas=[0.1, float("nan")], num_train_timesteps=2), ["trained_betas", "nan"]),
        (dict(trained_betas=[0.1, float("inf")], num_train_timesteps=2), ["trained_betas", "inf"]),
        (dict(beta_end=float("nan")), ["beta_end=nan", "finite"]),
        (dict(beta_start=float("inf")), ["beta_start=inf", "finite"]),
        (dict(sample_max_value=float("nan")), ["sample_max_value=nan", "finite"]),
        (dict(eta=float("nan")), ["eta=nan", "0 <= eta <= 1"]),
        (dict(rescale_betas_zero_snr=True), ["rescale_betas_zero_snr=True", "'epsilon'", "'v_prediction'", "refused"]),
    ],
)
def test_bad_config_raises(kwargs, words):
    with pytest.raises(ValueError) as error:
        SimpleScheduler(**kwargs)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(num_inference_steps=0), ["num_inference_steps=0", "1 to", "1000"]),
        (dict(num_inference_steps=1001), ["num_inference_steps=1001", "1000"]),
        (dict(), ["num_inference_steps", "timesteps"]),
        (dict(num_inference_steps=10, timesteps=[5, 0]), ["num_inference_steps", "timesteps"]),
        (dict(timesteps=[10, 20, 5]), ["[10, 20, 5]", "strictly descending", "[0, 999]"]),
        (dict(timesteps=[10, 10, 5]), ["[10, 10, 5]", "strictly descending"]),
        (dict(timesteps=[1000, 500, 0]), ["[1000, 500, 0]", "[0, 999]"]),
        (dict(timesteps=[500, -1]), ["[500, -1]", "[0, 999]"]),
        (dict(timesteps=[500.5, 3]), ["500.5", "integers"]),
    ],
)
def test_bad_set_timesteps_raises(kwargs, words):
    with pytest.raises(ValueError) as error:
        SimpleScheduler(sampler="ddim").set_timesteps(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_leading_spacing_past_the_last_train_timestep_raises():
    with pytest.raises(ValueError, match="steps_offset=1"):
        SimpleScheduler(sampler="ddim", timestep_spacing="leading", steps_offset=1).set_timesteps(1000)


def test_step_errors():
    scheduler = SimpleScheduler(sampler="ddim")
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="before `set_timesteps`"):
        scheduler.step(x, 999, x)
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep=998"):
        scheduler.step(x, 998, x)
    with pytest.raises(ValueError, match="eta=2"):
        scheduler.step(x, 999, x, eta=2)


@pytest.mark.parametrize("solver_order", [2, 3])
def test_lu_lambdas_ending_at_timestep_zero_stays_finite(solver_order):
    scheduler = SimpleScheduler(sampler="dpmsolver++", solver_order=solver_order, set_alpha_to_one=False)
    scheduler.set_timesteps(50)
    assert scheduler.timesteps[-1] == 0
    assert all(torch.isfinite(out.prev_sample).all() for out in denoise(scheduler))


@pytest.mark.parametrize("method", ["add_noise", "get_velocity"])
@pytest.mark.parametrize("timesteps", [[-1], [5, 1000], [0, 2000, -3]])
def test_forward_process_rejects_out_of_range_timesteps(method, timesteps):
    scheduler = SimpleScheduler()
    x = torch.zeros(len(timesteps), 2)
    with pytest.raises(ValueError) as error:
        getattr(scheduler, method)(x, x, torch.tensor(timesteps))
    bad = [t for t in timesteps if not 0 <= t <= 999]
    assert str(bad) in str(error.value) and "[0, 999]" in str(error.value)
    # the edges are accepted
    getattr(scheduler, method)(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0, 999]))


@pytest.mark.parametrize(
    "config",
    [dict(), dict(sampler="ddim", eta=0.3), dict(beta_schedule="linear_rescaled", num_train_timesteps=100),
     dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, solver_order=3)],
)
def test_config_round_trip_is_equal(config, tmp_path):
    # Diffusers' scheduler tests compare `config` after save_pretrained + from_pretrained
    scheduler = SimpleScheduler(**config)
    assert SimpleScheduler.from_config(scheduler.config).config == scheduler.config
    scheduler.save_pretrained(tmp_path)
    loaded = SimpleScheduler.from_pretrained(tmp_path)
    assert loaded.config == scheduler.config
    loaded.save_pretrained(tmp_path / "again")
    assert SimpleScheduler.from_pretrained(tmp_path / "again").config == scheduler.config
    # a value equal to the default gives the same config as leaving it out
    if "prediction_type" not in config:
        assert SimpleScheduler(prediction_type="epsilon", **config).config == scheduler.config


# ---------------------------------------------------------------------------------------------------------------
# issue 7: every model call counts


@pytest.mark.parametrize("timestep_spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("solver_order", [1, 2, 3])
@pytest.mark.parametrize("num_inference_steps", [3, 7, 16])
def test_dpmsolver_conformance_per_spacing_and_order(timestep_spacing, solver_order, num_inference_steps):
    # the same config in both schedulers: the same timesteps (n of them, never t = 0 for these spacings) and samples
    config = dict(timestep_spacing=timestep_spacing, solver_order=solver_order, use_lu_lambdas=False)
    ours = SimpleScheduler(sampler="dpmsolver++", **config)
    ref = DPMSolverMultistepScheduler.from_config(ours.config)
    assert ref.config.timestep_spacing == timestep_spacing and ref.config.solver_order == solver_order
    ours.set_timesteps(num_inference_steps)
    ref.set_timesteps(num_inference_steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert len(ours.timesteps) == num_inference_steps and ours.timesteps[-1] > 0
    assert_same_trajectory(denoise(ours), denoise(ref))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++", "unipc"])
@pytest.mark.parametrize("num_train_timesteps", [10, 1000])
def test_num_inference_steps_is_the_number_of_model_calls(sampler, num_train_timesteps):
    scheduler = SimpleScheduler(sampler=sampler, num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2")
    T = num_train_timesteps
    for n in sorted({1, 2, 3, 5, T // 2, T - 1, T}):
        scheduler.set_timesteps(n)
        assert scheduler.num_inference_steps == len(scheduler.timesteps) == n, n
        if n <= 10:
            calls = 0
            x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
            for t in scheduler.timesteps:
                calls += 1
                x = scheduler.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
            assert calls == n and torch.isfinite(x).all()


@pytest.mark.parametrize("config", [dict(), dict(solver_order=2), dict(use_corrector=False), dict(lambda_spacing_power=1.0),
                                    dict(analytic_first_step=False)])
def test_unipc_never_calls_the_model_at_t0(config):
    scheduler = SimpleScheduler(**config)
    for n in [*range(1, 21), 50, 999]:
        scheduler.set_timesteps(n)
        timesteps = scheduler.timesteps
        assert timesteps[-1] > 0 and bool((timesteps[1:] < timesteps[:-1]).all()), n
        # the first call at t = T - 1, or below it when the step from T - 1 is analytic
        expect_analytic = config.get("analytic_first_step", True)
        assert scheduler.analytic_first_step_active == expect_analytic, n
        assert (timesteps[0] < 999) if expect_analytic else (timesteps[0] == 999), (n, timesteps[0])
    # the last step lands on the clean sample; at first order that is the x_0 prediction of the last call
    first_order = SimpleScheduler(**config, final_step_type="polynomial", final_step_order=1)
    first_order.set_timesteps(4)
    outputs = denoise(first_order)
    torch.testing.assert_close(outputs[-1].prev_sample, outputs[-1].pred_original_sample, rtol=0, atol=0)
    assert scheduler.timesteps.dtype == torch.float32  # fractional timesteps; the model is called at them


def test_analytic_first_step_starts_from_the_ddim_step_with_eps_equal_to_the_noise():
    scheduler = SimpleScheduler()
    for n in (1, 5, 20):
        scheduler.set_timesteps(n)
        assert scheduler.analytic_first_step_active and len(scheduler.timesteps) == n
        # init_noise_sigma x_T is the deterministic DDIM step (Song et al. 2021, eq. 12) from t = T - 1 to
        # timesteps[0] with eps = x_T: x_0 = (x_T - sqrt(1 - abar_T) x_T) / sqrt(abar_T), then
        # x = sqrt(abar) x_0 + sqrt(1 - abar) x_T
        x_T = torch.randn(64, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        abar_T, abar = (abar_at(scheduler.alphas_cumprod, t).double() for t in (999, scheduler.timesteps[0]))
        x_0 = (x_T - (1 - abar_T).sqrt() * x_T) / abar_T.sqrt()
        moved = abar.sqrt() * x_0 + (1 - abar).sqrt() * x_T
        # rtol: abar_at returns float32 abar: near abar = 1 (the single call of n = 1 is at lambda = 2.5, 1 - abar =
        # 0.0067) its rounding (3e-8) moves sigma = sqrt(1 - abar) by up to 3e-8 / 0.0067 / 2 = 2e-6 relative
        torch.testing.assert_close(moved, x_T * scheduler.init_noise_sigma, rtol=2e-5, atol=0)
    # every call is where the grid says: custom timesteps, other samplers and the option off keep the call at T - 1
    for other in (SimpleScheduler(analytic_first_step=False), SimpleScheduler(sampler="dpmsolver++", use_lu_lambdas=False,
                  timestep_spacing="leading"), SimpleScheduler(sampler="ddim")):
        other.set_timesteps(5)
        assert not other.analytic_first_step_active and other.init_noise_sigma == 1.0
    scheduler.set_timesteps(timesteps=[700.0, 300.5, 20.0])
    assert not scheduler.analytic_first_step_active and scheduler.init_noise_sigma == 1.0
    with pytest.raises(ValueError, match="analytic_first_step"):
        SimpleScheduler(analytic_first_step=1)


def test_analytic_first_step_lands_on_the_exact_ode_solution_of_a_gaussian():
    # x_0 ~ N(mu, s^2): eps*(x_t) = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2), and the probability flow
    # ODE keeps (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) fixed, so x_0 = mu + s (x_T - alpha_T mu) /
    # sqrt(alpha_T^2 s^2 + sigma_T^2). The analytic first step ignores the mean (eps = x_T); redoing it with the first
    # call's x_0 puts the mean back.
    mu, s = 0.5, 0.2
    scheduler = SimpleScheduler()

    def eps_model(x, t):
        abar = abar_at(scheduler.alphas_cumprod, t).double()
        return (abar.neg().add(1).sqrt() * (x.double() - abar.sqrt() * mu) / (abar * s**2 + 1 - abar)).float()

    x_T = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    abar_T = scheduler.alphas_cumprod[-1].double()
    exact = mu + s * (x_T.double() - abar_T.sqrt() * mu) / (abar_T * s**2 + 1 - abar_T).sqrt()

    def max_error(skip_redo: bool) -> float:
        scheduler.set_timesteps(20)
        if skip_redo:  # what a pipeline that starts from a noised image declares
            scheduler.set_begin_index(0)
        x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(eps_model(x, t), t, x).prev_sample
        return (x.double() - exact).abs().max().item()

    # measured: 0.0017 with the redo (the 20-call discretisation error), 0.0041 without it; float32 rounding is ~1e-6
    assert max_error(skip_redo=False) < 0.0035
    assert max_error(skip_redo=False) < 0.5 * max_error(skip_redo=True)


@pytest.mark.parametrize("n", [5, 8])
def test_final_step_integrates_the_noise_prediction_over_sigma_exactly_for_quadratics(n):
    # The polynomial last step (final_step_order=3) is y_0 = y_last - int_0^{s_last} eps ds in y = x / alpha, s = sigma / alpha,
    # with eps the polynomial through the last 3 predictions: exact when those are eps(s) = a + b s + c s^2. A model
    # that returns that (and 0 before the last 3 calls) makes the last increment y_0 - y_last = -(a s + b s^2 / 2 +
    # c s^3 / 3) at s = s_last.
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(2, 3, 8, 8, generator=generator) for _ in range(3))
    c = 5 * c  # so that the quadratic term matters at the small s of the last calls

    def last_increment(final_step_order, final_step_type="polynomial"):
        scheduler = SimpleScheduler(final_step_order=final_step_order, final_step_type=final_step_type)
        scheduler.set_timesteps(n)
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * scheduler.init_noise_sigma
        for i, t in enumerate(scheduler.timesteps):
            abar = abar_at(scheduler.alphas_cumprod, t).double()
            s = float(((1 - abar) / abar).sqrt())
            eps = a + b * s + c * s**2 if i >= n - 3 else torch.zeros_like(x)
            called = x
            x = scheduler.step(eps, t, x).prev_sample
        return x.double() - called.double() / abar.sqrt(), s

    increment, s_last = last_increment(3)
    exact = -(a.double() * s_last + b.double() * s_last**2 / 2 + c.double() * s_last**3 / 3)
    # atol: the samples reach |x| = 80 (y = x / alpha stays x_T / alpha_first while eps = 0), float32 ulp 8e-6. The
    # increment is a difference of two such samples (2 ulp) plus each prediction's round trip through x_0 = (x -
    # sigma eps) / alpha and back, ulp / sigma_last = 1.3e-4, times its weight (<= s_last = 0.08): 3e-5 in all
    # (measured 1.3e-5 and 2.7e-5)
    torch.testing.assert_close(increment, exact, rtol=0, atol=1e-4)
    # the first- and second-order steps miss the c s^2 term (5 s_last^2 = 0.034): measured 2.6e-3 to 1.5e-2
    for lower in (1, 2):
        assert (last_increment(lower)[0] - exact).abs().max() > 2e-3, lower
    # predictions that no Gaussian mode explains (no isotropic width fits the last 2 calls): "auto" takes the
    # polynomial step
    torch.testing.assert_close(last_increment(3, "auto")[0], increment, rtol=0, atol=0)


def gaussian_mode_last_step(widths, mu, z, n, ulp_generator=None, **config):
    """The sample after the last step when every call gets the exact sample and prediction of Gaussian modes
    N(mu, widths^2) (per element): in y = x / alpha, s = sigma / alpha the ODE's path from noise z is
    y(s) = mu + z sqrt(w^2 + s^2), with eps(y, s) = s (y - mu) / (w^2 + s^2); it ends at y(0) = mu + w z.
    With `ulp_generator`, every sample and prediction value is moved by -1, 0 or +1 float32 ulp at random."""

    def moved(a):
        if ulp_generator is None:
            return a
        direction = torch.randint(-1, 2, a.shape, generator=ulp_generator).float()
        return torch.nextafter(a, a + direction * float("inf")).where(direction != 0, a)

    scheduler = SimpleScheduler(**config)
    scheduler.set_timesteps(n)
    for t in scheduler.timesteps:
        abar = abar_at(scheduler.alphas_cumprod, t).double()
        s = float(((1 - abar) / abar).sqrt())
        spread = (widths.double() ** 2 + s**2).sqrt()
        x = (abar.sqrt() * (mu + z * spread)).float()
        out = scheduler.step(moved((s * z / spread).float()), t, moved(x))
    return out.prev_sample


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_gaussian_final_step_is_the_exact_flow_of_isotropic_gaussian_modes(n):
    # Each sample i sits in its own isotropic mode N(mu_i, w_i^2 I). Fed exact samples and predictions at every call,
    # the Gaussian last step must land on y(0) = mu_i + w_i z_i, from a point mass (the x_0 prediction) to a mode
    # wider than s_last (0.082 at 5 calls). "auto" must find the modes up to 30 s_last consistent and agree; the
    # widest (w = 5 > 30 s_last) takes the polynomial step.
    generator = torch.Generator().manual_seed(0)
    widths = torch.tensor([0.0, 0.01, 0.05, 0.2, 1.0, 5.0]).view(-1, 1, 1, 1)
    mu, z = torch.randn(6, 3, 4, 4, generator=generator), torch.randn(6, 3, 4, 4, generator=generator)
    exact = mu + widths * z
    polynomial = gaussian_mode_last_step(widths, mu, z, n, final_step_type="polynomial")
    gaussian = gaussian_mode_last_step(widths, mu, z, n, final_step_type="gaussian")
    auto = gaussian_mode_last_step(widths, mu, z, n)
    # atol: |y| <= 18, float32 ulp 1.9e-6; the step rounds x = alpha y, eps, y = x / alpha and the update once each,
    # and the width enters y_0 through 1 / (1 + w / a), whose rounding is at most that of the last prediction's term
    # (measured <= 5e-6)
    torch.testing.assert_close(gaussian[:5], exact[:5], rtol=0, atol=2e-5)
    torch.testing.assert_close(auto[:5], exact[:5], rtol=0, atol=2e-5)
    torch.testing.assert_close(auto[5:], polynomial[5:], rtol=0, atol=0)
    # At w = 5, |eps| / s changes by 1e-4 or less between the last two calls, below the float32 rounding of eps
    # (ulp(|x|) / sigma), so the fitted width can be anything: the step lies between -s eps (w = 0) and -s eps / 2
    # (w >> s), 1/2 s_last |eps_last| <= 0.082 * 4 / 5 / 2 = 0.033 from the exact one (measured <= 1.3e-3)
    assert (gaussian - exact)[5:].abs().max() < 0.04
    # the polynomial step through the last calls misses the sharp modes: measured 0.04 to 0.1
    assert (polynomial - exact)[1:4].abs().max() > 0.02


@pytest.mark.parametrize("n", [5, 8])
def test_auto_final_step_gate_holds_under_one_ulp_of_other_rounding(n):
    # Another CPU rounds the model's outputs and the fit's sums differently (vector width, FMA), by about 1 ulp. The
    # gate must not sit on that edge: the w = 1 mode at 8 calls has a relative residual of 0.0033 against the
    # tolerance 0.01, all of it float32 rounding (the sharper modes 3e-5 or less). With every sample and prediction
    # moved by up to 1 ulp at every call (more than a different summation order or FMA changes), "auto" must still
    # take the Gaussian step for w <= 1: within the exact test's 2e-5 of y(0), where the polynomial step misses by
    # 3.6e-5 (w = 1) to 0.1 (sharp modes). A tolerance of 0.003 fails here.
    generator = torch.Generator().manual_seed(0)
    widths = torch.tensor([0.0, 0.01, 0.05, 0.2, 1.0]).view(-1, 1, 1, 1)
    mu, z = torch.randn(5, 3, 4, 4, generator=generator), torch.randn(5, 3, 4, 4, generator=generator)
    exact = mu + widths * z
    for seed in range(20):
        auto = gaussian_mode_last_step(widths, mu, z, n, ulp_generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(auto, exact, rtol=0, atol=2e-5)


@pytest.mark.parametrize("n", [3, 5, 8])
def test_auto_final_step_takes_the_polynomial_step_off_isotropic_modes(n):
    # An anisotropic Gaussian mode (width 0.02 in the first channel, 0.3 in the others), like image data that is not
    # locally isotropic: no single width explains the last two calls (the fit's residual, relative to |y_1 - y_2|, is
    # 0.25 to 0.45 here, against the tolerance 0.01), so "auto" is bitwise the polynomial step, while "gaussian" takes
    # its isotropic step anyway and lands elsewhere.
    generator = torch.Generator().manual_seed(1)
    widths = torch.tensor([0.02, 0.3, 0.3]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    mu, z = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    polynomial = gaussian_mode_last_step(widths, mu, z, n, final_step_type="polynomial")
    torch.testing.assert_close(gaussian_mode_last_step(widths, mu, z, n), polynomial, rtol=0, atol=0)
    gaussian = gaussian_mode_last_step(widths, mu, z, n, final_step_type="gaussian")
    assert (gaussian - polynomial).abs().max() > 0.01  # so the check above can fail: measured 0.03 to 0.07


def test_auto_final_step_fits_large_samples_on_a_strided_subset():
    # Samples of 3 x 64 x 64 = 12288 values are fitted on every third value: still exact for isotropic modes, and an
    # anisotropic mode (widths 0.02 / 0.3 / 0.3 per channel) still takes the polynomial step
    generator = torch.Generator().manual_seed(2)
    mu, z = torch.randn(2, 3, 64, 64, generator=generator), torch.randn(2, 3, 64, 64, generator=generator)
    isotropic = torch.tensor([0.05, 0.2]).view(2, 1, 1, 1)
    torch.testing.assert_close(gaussian_mode_last_step(isotropic, mu, z, 5), mu + isotropic * z, rtol=0, atol=2e-5)
    anisotropic = torch.tensor([0.02, 0.3, 0.3]).view(1, 3, 1, 1).expand(2, 3, 64, 64)
    polynomial = gaussian_mode_last_step(anisotropic, mu, z, 5, final_step_type="polynomial")
    torch.testing.assert_close(gaussian_mode_last_step(anisotropic, mu, z, 5), polynomial, rtol=0, atol=0)


@pytest.mark.parametrize("final_step_type", ["auto", "gaussian"])
def test_gaussian_final_step_after_one_call_is_the_x0_prediction(final_step_type):
    scheduler = SimpleScheduler(final_step_type=final_step_type)
    scheduler.set_timesteps(1)
    sample = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    out = scheduler.step(torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)), scheduler.timesteps[0], sample)
    torch.testing.assert_close(out.prev_sample, out.pred_original_sample, rtol=0, atol=0)


def test_unipc_last_call_moves_toward_the_data_above_6_calls():
    def last_lambda(scheduler, n):
        scheduler.set_timesteps(n)
        abar = np.interp(scheduler.timesteps[-1].item(), np.arange(1000), scheduler.alphas_cumprod.double().numpy())
        return 0.5 * np.log(abar / (1 - abar))

    scheduler = SimpleScheduler()
    lambda_1 = 0.5 * np.log(scheduler.alphas_cumprod[1].item() / (1 - scheduler.alphas_cumprod[1].item()))
    # lambda of the last call = last_lambda up to 6 calls, + 0.15 per extra call above, capped at train timestep 1
    # (atol: the timestep is found by interpolating log sigma between train timesteps, lambda here by abar)
    for n, expected in [(3, 2.5), (6, 2.5), (7, 2.65), (10, 3.1), (12, 3.4), (14, min(3.7, lambda_1)), (20, lambda_1),
                        (50, lambda_1)]:
        assert abs(last_lambda(scheduler, n) - expected) < 0.02, (n, last_lambda(scheduler, n), expected)
    fixed = SimpleScheduler(last_lambda_growth=0.0)
    assert abs(last_lambda(fixed, 20) - 2.5) < 0.02
    later = SimpleScheduler(last_lambda_growth=0.25, last_lambda_growth_start=10)
    assert abs(last_lambda(later, 10) - 2.5) < 0.02 and abs(last_lambda(later, 12) - 3.0) < 0.02
    with pytest.raises(ValueError, match="last_lambda_growth=-1"):
        SimpleScheduler(last_lambda_growth=-1)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"last_lambda_growth_start={bad!r} must be a positive integer"):
            SimpleScheduler(last_lambda_growth_start=bad)


def test_unipc_without_corrector_and_order_1_is_ddim_on_the_same_grid():
    unipc = SimpleScheduler(solver_order=1, use_corrector=False, analytic_first_step=False, final_step_type="polynomial",
                            final_step_order=1)
    unipc.set_timesteps(6)
    dpm = SimpleScheduler(sampler="dpmsolver++", solver_order=1)
    dpm.set_timesteps(timesteps=unipc.timesteps.tolist())
    assert_same_trajectory(denoise(unipc), denoise(dpm))


@pytest.mark.parametrize("solver_order", [2, 3])
def test_unipc_matches_diffusers_unipc_on_integer_timesteps(solver_order):
    # UniPC bh2 with UniC (data prediction) against Diffusers' UniPCMultistepScheduler on its integer timesteps
    ref = UniPCMultistepScheduler(solver_order=solver_order, timestep_spacing="trailing", final_sigmas_type="zero")
    ref.set_timesteps(8)
    ours = SimpleScheduler(solver_order=solver_order, final_step_type="polynomial", final_step_order=1)  # lower_order_final
    ours.set_timesteps(timesteps=ref.timesteps.tolist())
    assert_same_trajectory(denoise(ours), denoise(ref))


def test_custom_fractional_timesteps_for_ode_samplers():
    scheduler = SimpleScheduler()
    scheduler.set_timesteps(timesteps=[999.0, 500.5, 20.25])
    assert scheduler.timesteps.tolist() == [999.0, 500.5, 20.25]
    assert len(denoise(scheduler)) == 3
    with pytest.raises(ValueError, match="integers"):
        SimpleScheduler(sampler="ddpm").set_timesteps(timesteps=[999.0, 500.5])
