#!/usr/bin/env bash
# The wheel, as a user gets it: build it from the checkout's files, install it (non-editable) into a fresh venv in a
# temporary folder, and from a folder outside the checkout (not on sys.path) train a tiny model on the embedded
# digits with `diffusers-simple-train`, check the output folder as `diffusers-simple-publish` would, then load it
# with `DiffusionPipeline.from_pretrained(out, trust_remote_code=True)` and sample an image.
#
#   bash .ci/wheel_smoke.sh            (or `make test-wheel`)
#
# PYTHON picks the interpreter (default python3); TORCH_SPEC the torch to install first (default torch==2.13.0, the
# CPU wheel pip finds among the local wheels: a bare `torch` requirement would pull a multi-GB CUDA build);
# KEEP_SMOKE_DIR=1 keeps the temporary folder. Several minutes: most of it installing into the fresh venv.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/diffusers_simple_wheel_smoke.XXXXXX")
if [ "${KEEP_SMOKE_DIR:-0}" = 1 ]; then
    echo "wheel smoke: keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi
START=$(date +%s)
step() { echo "wheel smoke [$(( $(date +%s) - START )) s]: $*"; }

# The files git knows (tracked, or new and not ignored), copied away: the build sees exactly what a clone has, and
# writes its build/ and *.egg-info there, not into the checkout.
step "copying the checkout's files to $WORK/src"
mkdir -p "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"

step "fresh venv with $("$PYTHON" --version 2>&1)"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip

step "building the wheel"
"$VPY" -m pip wheel -q --no-deps "$WORK/src" -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/diffusers_simple-*.whl)
step "built $(basename "$WHEEL")"
"$VPY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))})
assert tops == ["diffusers_simple", "diffusers_simple_training"], f"top-level names in the wheel: {tops}"
for needed in ("diffusers_simple_training/embedded_data/digits.csv.gz", "diffusers_simple_training/embedded_data/DIGITS_LICENSE.md",
               "diffusers_simple_training/model_cards/model_card_template.md", "diffusers_simple_training/configs/demo.yaml"):
    assert any(n.startswith(needed) for n in names), f"{needed} is not in the wheel"
assert not any(n.startswith(("tests/", "training/", "benchmarks/")) for n in names), "checkout folders in the wheel"
print(f"  {len(names)} files; top-level packages: {', '.join(tops)}")
EOF

step "installing $TORCH_SPEC, then the wheel"
"$VPY" -m pip install -q "$TORCH_SPEC"
"$VPY" -m pip install -q "$WHEEL"

# From here on: an empty folder outside the checkout, no PYTHONPATH, no Hub (the embedded digits need none).
mkdir -p "$WORK/run"
cd "$WORK/run"
unset PYTHONPATH
export HF_HOME="$WORK/hf_home" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export SMOKE_ROOT="$ROOT"

step "checking the installed packages"
"$VPY" - <<'EOF'
import importlib.resources, importlib.util, os, sys
root = os.path.realpath(os.environ["SMOKE_ROOT"])
assert not any(os.path.realpath(p or ".").startswith(root) for p in sys.path), f"the checkout is on sys.path: {sys.path}"
assert importlib.util.find_spec("training") is None, "a top-level `training` package is installed"
import diffusers_simple, diffusers_simple_training
for module in (diffusers_simple, diffusers_simple_training):
    assert not os.path.realpath(module.__file__).startswith(root), f"{module.__name__} imported from the checkout"
    assert "site-packages" in module.__file__, module.__file__
package = importlib.resources.files("diffusers_simple_training")
assert (package / "embedded_data" / "digits.csv.gz").is_file()
assert any(p.name.endswith(".md") for p in (package / "model_cards").iterdir())
print(f"  diffusers_simple_training from {os.path.dirname(diffusers_simple_training.__file__)}")
EOF

step "training 3 steps with diffusers-simple-train"
"$WORK/venv/bin/diffusers-simple-train" \
    --output_dir "$WORK/run/out" --resolution 8 --max_train_steps 3 --train_batch_size 16 --lr_warmup_steps 0 \
    --block_out_channels 16 32 --layers_per_block 1 --attention_levels false true --attention_head_dim 16 \
    --norm_num_groups 8 --ddpm_num_steps 100 --ddpm_num_inference_steps 2 --eval_batch_size 4 --seed 0

step "checking the output folder as diffusers-simple-publish does, then loading it and sampling"
"$VPY" - "$WORK/run/out" <<'EOF'
import sys
from diffusers_simple_training.publish import check_pipeline_folder
check_pipeline_folder(sys.argv[1])
sys.modules["diffusers_simple"] = None  # only the code saved with the pipeline may be used
import numpy as np, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
out = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
image = out.images[0]
assert image.shape[:2] == (8, 8) and np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1, image.shape
print(f"  {type(pipe).__name__} with {type(pipe.unet).__name__} sampled an image of shape {image.shape}")
EOF

step "passed"
echo "wheel_smoke: 1 passed, 0 failed"
