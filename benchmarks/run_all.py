"""Runs every benchmark at its full setting (`make benchmarks`), one process each, and prints their wall times.

    python benchmarks/run_all.py                      # writes benchmarks/results/*.md and *.png
    python benchmarks/run_all.py --tiny --output_dir /tmp/bench   # any extra arguments go to every script
"""

import subprocess
import sys
import time
from pathlib import Path

# time_to_quality_fashion_mnist.py is not here: it needs `make fashion-mnist` and hours (`make time-to-quality-fashion-mnist`);
# nor the class-conditional run of sampler_quality_trained.py, which needs `make demo` first:
#   python benchmarks/sampler_quality_trained.py --model_dir outputs/demo --guidance_scales 1 2 --num_samples 300
# nor grid_transfer.py on a Fashion-MNIST model (the recipe ablations' or `make fashion-mnist-model`'s):
#   python benchmarks/grid_transfer.py --model_dir MODEL --classifier_reference data/fashion-mnist --result_name grid_transfer_fashion_mnist
SCRIPTS = ("sampler_accuracy.py", "sampler_quality_trained.py", "grid_transfer.py", "train_throughput.py",
           "sampling_speed.py", "time_to_quality.py", "editing.py")


def main() -> None:
    here = Path(__file__).resolve().parent
    wall_times = {}
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, str(here / script), *sys.argv[1:]], check=True)
        wall_times[script] = time.perf_counter() - start
    print("\nwall times: " + ", ".join(f"{script} {seconds:.0f} s" for script, seconds in wall_times.items()))
    if "--output_dir" not in sys.argv:  # the results landed in benchmarks/results: refresh the README's copy
        subprocess.run([sys.executable, str(here / "update_readme.py")], check=True)


if __name__ == "__main__":
    main()
