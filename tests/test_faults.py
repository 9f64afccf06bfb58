"""Fault injection on training: kills while saving a checkpoint or exporting, corrupt and missing checkpoint files,
two runs on one output folder, resuming into a folder that holds no run, checkpoint limits across a resume from an
older checkpoint, and non-finite arguments. The slow tests train a tiny model in subprocesses (a few seconds each)."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from diffusers_simple_training.args import FLOAT_RANGES, build_parser, parse_args
from diffusers_simple_training.atomic import write_text
from diffusers_simple_training.checkpointing import latest_checkpoint, list_checkpoints, resolve_checkpoint
from diffusers_simple_training.lineage import MARKER_NAME, RunLine, write_marker
from diffusers_simple_training.run_lock import LOCK_NAME, OutputDirLockedError, RunLock
from test_training import REPO, TINY_RUN, TINY_UNET, assert_same_weights, fake_checkpoint, run_training, weights


# A run of 6 steps, 2 per epoch (32 images), a checkpoint and an export every 2 steps.
RUN = "--max_train_samples 32 --max_train_steps 6 --checkpointing_steps 2 --save_model_epochs 1 --dropout 0.1".split()
UNET_FILE = "unet/diffusion_pytorch_model.safetensors"
# Runs training in a subprocess, SIGKILLing itself at the point named by KILL_AT (a preemption at the worst moment).
KILLABLE_TRAIN = """
import os, signal, sys
from diffusers_simple_training import checkpointing, export, train

def wrap(module, name, should_die):
    original = getattr(module, name)
    def wrapper(*args):
        if should_die(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)
    setattr(module, name, wrapper)

kill_at, renames, exports = os.environ.get("KILL_AT"), [], []
if kill_at == "manifest":  # checkpoint-4.tmp is written, its manifest is not
    wrap(checkpointing, "write_manifest", lambda folder: folder.endswith("checkpoint-4.tmp"))
elif kill_at == "rename":  # checkpoint-4.tmp is complete, not yet renamed
    wrap(checkpointing, "replace_path", lambda source, target: target.endswith("checkpoint-4"))
elif kill_at == "export":  # the second export (step 4) has replaced 3 of the folder's entries
    wrap(export, "export_pipeline", lambda *args: exports.append(1) and False)
    wrap(export, "replace_path", lambda *args: len(exports) == 2 and (renames.append(1) or len(renames) == 3))
train.main(sys.argv[1:])
"""


def train_subprocess(output_dir, *args, kill_at=None):
    command = [sys.executable, "-c", KILLABLE_TRAIN, *TINY_RUN.split(), *TINY_UNET.split(), *RUN]
    command += ["--output_dir", str(output_dir), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", **({"KILL_AT": kill_at} if kill_at else {}))
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    result = train_subprocess(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def copy_run(run, destination):
    shutil.copytree(run, destination)
    return destination


# --- kill points -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["manifest", "rename", "export"])
def test_sigkill_while_saving_then_resume_gives_the_uninterrupted_weights(reference_run, tmp_path, kill_at):
    killed = train_subprocess(tmp_path, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    expected_newest = 4 if kill_at == "export" else 2  # a checkpoint killed while saving does not count
    assert list_checkpoints(tmp_path)[-1][0] == expected_newest
    lock = json.loads((tmp_path / LOCK_NAME).read_text())  # left behind by the killed run: stale

    resumed = train_subprocess(tmp_path, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Taking over the stale lock {tmp_path / LOCK_NAME} of pid {lock['pid']}" in resumed.stderr
    assert f"Resumed from {tmp_path / f'checkpoint-{expected_newest}'}" in resumed.stderr
    assert_same_weights(weights(reference_run / "checkpoint-6"), weights(tmp_path / "checkpoint-6"))
    assert_same_weights(load_file(reference_run / UNET_FILE), load_file(tmp_path / UNET_FILE))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] and not (tmp_path / LOCK_NAME).exists()


# --- corrupt and missing checkpoint files ----------------------------------------------------------------------------


@pytest.mark.slow
def test_corrupt_or_incomplete_checkpoints_are_refused_by_name(reference_run, tmp_path):
    run = copy_run(reference_run, tmp_path / "run")
    newest, older = run / "checkpoint-6", run / "checkpoint-4"
    with open(newest / "model.safetensors", "r+b") as f:  # truncated
        f.truncate(100)
    with pytest.raises(ValueError, match=rf"checkpoint {newest} is corrupt: model.safetensors does not match"):
        resolve_checkpoint(str(newest), str(run))
    (older / "random_states_0.pkl").unlink()
    with pytest.raises(ValueError, match=rf"checkpoint {older} is incomplete: random_states_0.pkl is missing"):
        resolve_checkpoint(str(older), str(run))
    (run / "checkpoint-2" / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"checkpoint-2 is incomplete: it has no manifest.json"):
        resolve_checkpoint(str(run / "checkpoint-2"), str(run))
    # `latest` skips them with a warning, and refuses when no complete checkpoint is left rather than start over
    with pytest.raises(ValueError, match="No complete checkpoint to resume"):
        latest_checkpoint(str(run))


@pytest.mark.slow
def test_latest_skips_a_corrupt_newest_checkpoint_and_redoes_its_steps(reference_run, tmp_path, caplog):
    run = copy_run(reference_run, tmp_path / "run")
    (run / LOCK_NAME).unlink(missing_ok=True)
    with open(run / "checkpoint-6" / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 16)  # same size, other content
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(str(run)) == str(run / "checkpoint-4")
    assert "skips" in caplog.text and "checkpoint-6 is corrupt: model.safetensors" in caplog.text
    result = train_subprocess(run, "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(weights(reference_run / "checkpoint-6"), weights(run / "checkpoint-6"))


def test_a_resume_without_rng_states_is_refused(tmp_path):
    fake_checkpoint(tmp_path / "checkpoint-3", 3)
    (tmp_path / "checkpoint-3" / "random_states_0.pkl").unlink()
    with pytest.raises(ValueError, match="checkpoint-3 is incomplete: random_states_0.pkl is missing"):
        run_training(tmp_path / "out", "--resume_from_checkpoint", tmp_path / "checkpoint-3", "--max_train_steps", "4")
    assert not (tmp_path / "out").exists()


# --- the output folder -----------------------------------------------------------------------------------------------


def test_resume_into_a_folder_that_holds_no_run_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("mine")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="holds no training run .*--overwrite_output_dir to write into it anyway"):
        run_training(tmp_path, "--resume_from_checkpoint", "latest", "--max_train_steps", "1")
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "README.md").read_text() == "mine"


def test_a_second_run_on_a_locked_folder_is_refused(tmp_path):
    write_marker(str(tmp_path), RunLine("x"))
    with RunLock(str(tmp_path)):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(OutputDirLockedError, match=rf"in use by another training run: pid {os.getpid()} on host"):
            run_training(tmp_path, "--resume_from_checkpoint", "latest", "--max_train_steps", "1")
        with pytest.raises(OutputDirLockedError, match="in use by another training run"):
            RunLock(str(tmp_path)).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # released


def test_stale_and_foreign_locks(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started_at": "t"}))
    with caplog.at_level(logging.WARNING), RunLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"Taking over the stale lock {tmp_path / LOCK_NAME} of pid {dead.pid}" in caplog.text
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started_at": "t"}))
    with pytest.raises(OutputDirLockedError, match=r"pid 1 on host 'elsewhere' .*cannot be checked .*delete"):
        RunLock(str(tmp_path)).acquire()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(OutputDirLockedError, match="records the running pid"):  # a live pid, even without flock
        RunLock(str(tmp_path)).acquire()


# --- run lines and checkpoint limits ---------------------------------------------------------------------------------


def test_latest_follows_the_line_last_started(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path / f"checkpoint-{step}", step, line="old")
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-6")  # no marker: the newest
    # a run resumed from checkpoint-2 started line "new"; before it saved anything, latest is where it started
    write_marker(str(tmp_path), RunLine("new", [["old", 2]], str(tmp_path / "checkpoint-2")))
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    shutil.rmtree(tmp_path / "checkpoint-4")
    fake_checkpoint(tmp_path / "checkpoint-4", 4, line="new", ancestors=[["old", 2]])
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")  # not the stale checkpoint-6


@pytest.mark.slow
def test_checkpoint_limit_after_resuming_from_an_older_checkpoint(tmp_path):
    run_training(tmp_path, *RUN, "--checkpoints_total_limit", "2")  # in this process: no weights are compared
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 6]
    old_line = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())["line"]
    args = ["--resume_from_checkpoint", tmp_path / "checkpoint-4", "--max_train_steps", 5, "--checkpointing_steps", 1]
    run_training(tmp_path, *RUN, *args, "--checkpoints_total_limit", 1)
    # the checkpoint just saved is kept; checkpoint-6 of the abandoned line is superseded and deleted
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5]
    state = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["line"] != old_line and state["ancestors"] == [[old_line, 4]]
    assert state["parent"] == str(tmp_path / "checkpoint-4")
    assert json.loads((tmp_path / MARKER_NAME).read_text())["line"] == state["line"]
    assert latest_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-5")


# --- arguments -------------------------------------------------------------------------------------------------------


def test_every_float_argument_has_an_accepted_range():
    floats = {action.dest for action in build_parser()._actions if action.type is float}
    assert floats == set(FLOAT_RANGES)


@pytest.mark.parametrize("name", sorted(FLOAT_RANGES))
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_arguments_are_refused(name, value):
    interval = FLOAT_RANGES[name].replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(ValueError, match=rf"--{name} must be a finite number in {interval}, but is {value}"):
        parse_args([f"--{name}", value, "--label_column", "label"])


def test_out_of_range_arguments_are_refused():
    with pytest.raises(ValueError, match=r"--adam_beta2 must be in \[0, 1\), but is 1.0"):
        parse_args(["--adam_beta2", "1"])
    with pytest.raises(ValueError, match=r"--ema_inv_gamma must be in \(0, inf\), but is 0.0"):
        parse_args(["--ema_inv_gamma", "0"])


def test_write_text_replaces_the_file_whole_or_not_at_all(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    with pytest.raises(UnicodeEncodeError):  # fails halfway through writing: the old file stays, no temporary file
        write_text(path, '{"a": 2, "b": "' + "x" * 100_000 + '\ud800"}')
    assert path.read_text() == '{"a": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
