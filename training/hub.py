# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Push a saved pipeline folder to the Hugging Face Hub, retrying transient failures."""

import logging
import time
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError


try:  # the HTTP library of huggingface_hub: httpx2 in 2.x, httpx in 1.x
    from httpx2 import TransportError
except ImportError:
    from httpx import TransportError


logger = logging.getLogger(__name__)


def _is_transient(error: Exception) -> bool:
    """Network failures, rate limits (429) and server errors (5xx) may pass on a retry; other errors will not."""
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is None or status == 429 or status >= 500
    return isinstance(error, TransportError)  # no answer at all: connection error, timeout, ...


def push_folder_to_hub(
    folder,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload pipeline",
    retries: int = 3,
    ignore_patterns: list[str] | None = None,
    backoff_seconds: float = 2.0,
) -> str:
    r"""
    Creates the model repo `repo_id` if needed and uploads `folder` to it in one commit.

    Transient failures (network errors, HTTP 429 and 5xx) are retried with exponential backoff; other errors
    (e.g. 401/403/404) are raised at once. Files already on the Hub with the same content are not uploaded again,
    and nothing local is ever deleted, so a failed push can simply be run again.

    Args:
        folder (`str` or `os.PathLike`):
            The folder to upload, e.g. the output of `pipeline.save_pretrained(folder)`.
        repo_id (`str`):
            The repo to push to, as `"user_or_org/name"`.
        token (`str`, *optional*):
            A Hub token with write access. Defaults to the cached login or `HF_TOKEN`.
        private (`bool`, *optional*, defaults to `False`):
            Whether a newly created repo is private. An existing repo keeps its visibility.
        commit_message (`str`, *optional*, defaults to `"Upload pipeline"`):
            The message of the commit.
        retries (`int`, *optional*, defaults to 3):
            How many attempts to make in total.
        ignore_patterns (`list[str]`, *optional*):
            Glob patterns of files in `folder` not to upload (e.g. `["checkpoint-*", "logs/*"]`).
        backoff_seconds (`float`, *optional*, defaults to 2.0):
            The wait before the second attempt; it doubles before each following one.

    Returns:
        `str`: The URL of the commit.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` has to be an existing directory but is {str(folder)!r}.")
    if not isinstance(retries, int) or retries < 1:
        raise ValueError(f"`retries` has to be a positive integer but is {retries!r}.")

    api = HfApi(token=token)
    for attempt in range(1, retries + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message, ignore_patterns=ignore_patterns
            ).commit_url
        except Exception as error:
            if not _is_transient(error):
                raise
            if attempt == retries:
                raise RuntimeError(
                    f"Could not push {str(folder)!r} to the Hub repo {repo_id!r} after {retries} attempts. The local "
                    f"folder is unchanged: run `python -m diffusers_simple_training.publish {folder} --hub_model_id {repo_id}` to try "
                    f"again. The last error was: {error}"
                ) from error
            wait = backoff_seconds * 2 ** (attempt - 1)
            logger.warning(f"Push to {repo_id!r} failed (attempt {attempt}/{retries}): {error}. Retrying in {wait:g} s.")
            time.sleep(wait)
