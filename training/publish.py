# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Push a trained pipeline folder to the Hugging Face Hub.

    python -m diffusers_simple_training.publish OUTPUT_DIR --hub_model_id user/name [--private] [--hub_token TOKEN]

Checks first that OUTPUT_DIR is a complete pipeline folder (what `pipeline.save_pretrained` and the training
script's model card write), so that what lands on the Hub loads with
`DiffusionPipeline.from_pretrained("user/name", trust_remote_code=True)`.
"""

import argparse
import json
from pathlib import Path

from diffusers_simple_training.hub import push_folder_to_hub


# What lives next to the pipeline in a training output folder but does not belong on the Hub: resumable
# checkpoints, and the files or folders (`*.tmp/`) of a save that was interrupted.
IGNORE_PATTERNS = ["checkpoint-*", "*.tmp", "*.tmp/"]
# Libraries Diffusers imports a component from by name; any other library name must be a code file in the folder.
LIBRARIES = ("diffusers", "transformers")


def check_pipeline_folder(folder) -> None:
    """Raises a `ValueError` naming everything a loadable pipeline folder lacks: `model_index.json`, the `unet/`
    and `scheduler/` folders, the `README.md` model card, and the code file of each custom class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a directory; pass the `--output_dir` of a training run.")
    problems = [f"{name} is missing" for name in ("model_index.json", "README.md") if not (folder / name).is_file()]
    problems += [f"{name}/ is missing" for name in ("unet", "scheduler") if not (folder / name).is_dir()]
    if (folder / "model_index.json").is_file():
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        entries = {"_class_name": index.get("_class_name")} | {k: v for k, v in index.items() if not k.startswith("_")}
        for name, entry in entries.items():
            if isinstance(entry, list) and entry[0] not in (*LIBRARIES, None):
                code_file = Path("" if name == "_class_name" else name) / f"{entry[0]}.py"
                if not (folder / code_file).is_file():
                    problems.append(f"{code_file} (the code of {entry[1]}, named in model_index.json) is missing")
    if problems:
        raise ValueError(
            f"{str(folder)!r} is not a complete pipeline folder: {'; '.join(problems)}. A training run with "
            "`--output_dir` writes one (`pipeline.save_pretrained(output_dir)` plus its model card)."
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="The pipeline folder written by the training script.")
    parser.add_argument("--hub_model_id", required=True, help="The repo to push to, as `user_or_org/name`.")
    parser.add_argument("--private", action="store_true", help="Create the repo as private if it does not exist.")
    parser.add_argument(
        "--hub_token", "--token", default=None, help="A Hub token with write access (default: the cached login)."
    )
    parser.add_argument("--commit_message", default="Upload pipeline", help="The commit message.")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_pipeline_folder(args.output_dir)
    commit_url = push_folder_to_hub(
        args.output_dir,
        args.hub_model_id,
        token=args.hub_token,
        private=args.private,
        commit_message=args.commit_message,
        ignore_patterns=IGNORE_PATTERNS,
    )
    print(f"Pushed {args.output_dir} to {args.hub_model_id}: {commit_url}")


if __name__ == "__main__":
    main()
