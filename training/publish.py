# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Push a trained pipeline folder to the Hugging Face Hub.

    diffusers-simple-publish OUTPUT_DIR --hub_model_id user/name [--private] [--hub_token TOKEN]
        [--retries 3] [--backoff_seconds 2] [--connect_timeout 10] [--read_timeout 60]

Checks first that OUTPUT_DIR is a complete pipeline folder (what `pipeline.save_pretrained` and the training
script's model card write, with complete safetensors weights), so that what lands on the Hub loads with
`DiffusionPipeline.from_pretrained("user/name", trust_remote_code=True)`. Every Hub request has a connect and a
read timeout, and transient failures are retried with backoff; when all attempts fail, the error says so and how to
try again (the local folder is never changed).
"""

import argparse
import json
import sys
from pathlib import Path

from diffusers_simple_training.hub import (
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRIES,
    HubRetriesExhaustedError,
    push_folder_to_hub,
)
from diffusers_simple_training.lineage import MARKER_NAME
from diffusers_simple_training.run_lock import LOCK_NAME


# What lives next to the pipeline in a training output folder but does not belong on the Hub: resumable
# checkpoints, the files or folders (`*.tmp/`) of a save that was interrupted, the run's lock and its marker.
IGNORE_PATTERNS = ["checkpoint-*", "*.tmp", "*.tmp/", LOCK_NAME, MARKER_NAME]
# Libraries Diffusers imports a component from by name; any other library name must be a code file in the folder.
LIBRARIES = ("diffusers", "transformers")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
# Files of this size or less have their tensors loaded by the check, not only their header parsed.
LOAD_TENSORS_MAX_BYTES = 256 * 1024 * 1024


def _read_json(path: Path, problems: list[str], label: str):
    """The JSON object in `path`, or None after adding to `problems` why it is missing or unreadable."""
    if not path.is_file():
        problems.append(f"{label} is missing")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{label} is not valid JSON ({error})")
        return None
    if not isinstance(value, dict):
        problems.append(f"{label} is not a JSON object")
        return None
    return value


def check_safetensors_file(path) -> str | None:
    """Why the safetensors file `path` is incomplete or unreadable, or None if it is fine.

    The header is parsed with the `safetensors` library, and the file's size has to be exactly the 8-byte header
    length, the header and the tensor data its offsets cover (a truncated copy or an interrupted save fails this);
    tensors of files up to 256 MB are loaded as well."""
    import struct

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"is truncated ({size} bytes: not even the 8-byte header length)"
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        if 8 + header_size > size:
            return f"is truncated ({size} bytes, but its header alone claims {8 + header_size})"
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return f"has an unreadable header ({error})"
    if not isinstance(header, dict):
        return "has an unreadable header (not a JSON object)"
    try:
        data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError) as error:
        return f"has an unreadable header (bad data_offsets: {error!r})"
    expected = 8 + header_size + data_end
    if size != expected:
        state = "is truncated" if size < expected else "has trailing bytes"
        return f"{state} ({size} bytes, but its header's data offsets need exactly {expected})"
    try:
        with safe_open(path, framework="pt") as weights:
            keys = list(weights.keys())
            if size <= LOAD_TENSORS_MAX_BYTES:
                for key in keys:
                    weights.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return f"cannot be read by safetensors ({error})"
    if not keys:
        return "holds no tensors"
    return None


def check_pipeline_folder(folder) -> None:
    """Raises a `ValueError` naming everything that keeps `folder` from being a loadable pipeline folder, all at once:
    `model_index.json` and the `README.md` model card; `unet/config.json` and complete, readable safetensors weights
    `unet/diffusion_pytorch_model.safetensors` (pickle `.bin` weights are refused); a parseable
    `scheduler/scheduler_config.json`; and the code file of each custom class named in `model_index.json`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is not a directory; pass the `--output_dir` of a training run.")
    problems = []
    index = _read_json(folder / "model_index.json", problems, "model_index.json")
    if not (folder / "README.md").is_file():
        problems.append("README.md is missing")

    if not (folder / "unet").is_dir():
        problems.append("unet/ is missing")
    else:
        _read_json(folder / "unet" / "config.json", problems, "unet/config.json")
        weights = folder / "unet" / WEIGHTS_NAME
        pickles = sorted(p.name for p in (folder / "unet").glob("*.bin"))
        if weights.is_file():
            problem = check_safetensors_file(weights)
            if problem:
                problems.append(f"unet/{WEIGHTS_NAME} {problem}")
        elif pickles:
            problems.append(
                f"unet/{WEIGHTS_NAME} is missing; only pickle weights ({', '.join('unet/' + p for p in pickles)}) "
                "are there, and only safetensors weights are published (save with `safe_serialization=True`)"
            )
        else:
            problems.append(f"unet/{WEIGHTS_NAME} (the weights) is missing")

    if not (folder / "scheduler").is_dir():
        problems.append("scheduler/ is missing")
    else:
        _read_json(folder / "scheduler" / "scheduler_config.json", problems, "scheduler/scheduler_config.json")

    if index is not None:
        entries = {"_class_name": index.get("_class_name")} | {k: v for k, v in index.items() if not k.startswith("_")}
        for name, entry in entries.items():
            if isinstance(entry, list) and entry and entry[0] not in (*LIBRARIES, None):
                code_file = Path("" if name == "_class_name" else name) / f"{entry[0]}.py"
                if not (folder / code_file).is_file():
                    label = entry[1] if len(entry) > 1 else entry[0]
                    problems.append(f"{code_file.as_posix()} (the code of {label}, named in model_index.json) is missing")
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
    parser.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="Attempts in all; transient failures are retried."
    )
    parser.add_argument(
        "--backoff_seconds", type=float, default=DEFAULT_BACKOFF_SECONDS,
        help="The wait before the second attempt; it doubles before each following one.",
    )
    parser.add_argument(
        "--connect_timeout", type=float, default=None,
        help=f"Seconds to wait for a connection to the Hub (default {DEFAULT_CONNECT_TIMEOUT:g}, "
        "or DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT).",
    )
    parser.add_argument(
        "--read_timeout", type=float, default=None,
        help=f"Seconds to wait for the Hub to send or accept a byte (default {DEFAULT_READ_TIMEOUT:g}, "
        "or DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT).",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        check_pipeline_folder(args.output_dir)
        commit_url = push_folder_to_hub(
            args.output_dir,
            args.hub_model_id,
            token=args.hub_token,
            private=args.private,
            commit_message=args.commit_message,
            ignore_patterns=IGNORE_PATTERNS,
            retries=args.retries,
            backoff_seconds=args.backoff_seconds,
            connect_timeout=args.connect_timeout,
            read_timeout=args.read_timeout,
        )
    except (ValueError, HubRetriesExhaustedError) as error:  # said in full, without a traceback; exit status 1
        sys.exit(f"diffusers-simple-publish: error: {error}")
    print(f"Pushed {args.output_dir} to {args.hub_model_id}: {commit_url}")


if __name__ == "__main__":
    main()
