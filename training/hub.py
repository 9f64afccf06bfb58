# Copyright 2026 The diffusers-simple authors. Licensed under the Apache License, Version 2.0.
"""Talk to the Hugging Face Hub with timeouts and bounded retries: create a repo, push a saved pipeline folder.

`huggingface_hub` sends most of its API calls (create a repo, preupload, commit, LFS uploads) through one shared
HTTP client whose default timeout is `None`: a Hub, proxy or firewall that accepts the connection but never answers
makes such a call wait forever, so retries never get a chance. Every call here runs inside `hub_timeouts(...)`,
which installs a client with connect/read timeouts through the library's own `huggingface_hub.set_client_factory`
for the duration of the call, then puts the previous factory back.

Timeouts default to 10 s (connect) and 60 s (read), or to the environment variables
`DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT` / `DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT` (seconds) when they are set.
"""

import contextlib
import logging
import os
import shlex
import threading
import time
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import _http as _hf_http


try:  # the HTTP library of huggingface_hub: httpx2 in 2.x, httpx in 1.x
    import httpx2 as _httpx
except ImportError:
    import httpx as _httpx

TransportError = _httpx.TransportError


logger = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 2.0
MAX_RETRY_AFTER_SECONDS = 120.0  # the longest a 429's `Retry-After` may make us wait between two attempts

_FACTORY_LOCK = threading.RLock()


class HubRetriesExhaustedError(RuntimeError):
    """Every attempt at a Hub operation failed with a transient error (no answer, timeout, 429, 5xx).

    `attempts`, `elapsed` (seconds) and `last_error` tell what happened; the message says what to do next."""

    def __init__(self, message: str, attempts: int, elapsed: float, last_error: Exception):
        super().__init__(message)
        self.attempts, self.elapsed, self.last_error = attempts, elapsed, last_error


def _timeout_from_env(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"The environment variable {name} has to be a number of seconds but is {value!r}.") from None
    if seconds <= 0:
        raise ValueError(f"The environment variable {name} has to be positive but is {value!r}.")
    return seconds


def _resolve_timeouts(connect_timeout: float | None, read_timeout: float | None) -> tuple[float, float]:
    connect = _timeout_from_env("DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT) if connect_timeout is None else connect_timeout
    read = _timeout_from_env("DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT", DEFAULT_READ_TIMEOUT) if read_timeout is None else read_timeout
    for name, value in (("connect_timeout", connect), ("read_timeout", read)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"`{name}` has to be a positive number of seconds but is {value!r}.")
    return float(connect), float(read)


@contextlib.contextmanager
def hub_timeouts(connect_timeout: float | None = None, read_timeout: float | None = None):
    r"""
    Within this context, every request that `huggingface_hub` sends through its shared client (`get_session()`)
    without a timeout of its own gives up after `connect_timeout` seconds trying to connect and after `read_timeout`
    seconds without receiving (or being able to send) a byte; the timeout error it raises can then be retried.

    It uses the library's hook for this, `huggingface_hub.set_client_factory`: the client is made by the factory
    that was in place (so a proxy or certificate set up that way is kept), with the timeouts set on it. The previous
    factory is restored on exit. Changing the factory closes the shared client, so don't enter this context while
    another thread is in the middle of a Hub request.
    """
    connect, read = _resolve_timeouts(connect_timeout, read_timeout)
    timeout = _httpx.Timeout(read, connect=connect)  # read, write and pool: `read`; connect: `connect`
    with _FACTORY_LOCK:
        previous = getattr(_hf_http, "_GLOBAL_CLIENT_FACTORY", None) or _hf_http.default_client_factory

        def client_with_timeouts():
            client = previous()
            client.timeout = timeout
            return client

        huggingface_hub.set_client_factory(client_with_timeouts)
        try:
            yield timeout
        finally:
            huggingface_hub.set_client_factory(previous)


def _is_transient(error: Exception) -> bool:
    """Network failures, rate limits (429) and server errors (5xx) may pass on a retry; other errors will not."""
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        return status is None or status in (408, 429) or status >= 500
    return isinstance(error, TransportError)  # no answer at all: connection error, timeout, ...


def _retry_after(error: Exception) -> float | None:
    """The wait a 429 or 503 answer asks for in its `Retry-After` header (seconds only), if any."""
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_SECONDS) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing here
        return None


def _describe(error: Exception) -> str:
    if isinstance(error, _httpx.TimeoutException):
        kind = {"ConnectTimeout": "no connection", "ReadTimeout": "no answer", "WriteTimeout": "could not send",
                "PoolTimeout": "no free connection"}.get(type(error).__name__, "timeout")
        return f"{type(error).__name__} ({kind} within the timeout){': ' + str(error) if str(error) else ''}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    server_message = getattr(error, "server_message", None)
    if isinstance(error, HfHubHTTPError) and server_message and server_message.strip() not in text:
        text += f" ({' '.join(server_message.split())})"
    return f"{type(error).__name__}: {text}"


def _check_retry_arguments(retries, backoff_seconds) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 1:
        raise ValueError(f"`retries` has to be a positive integer but is {retries!r}.")
    if not isinstance(backoff_seconds, (int, float)) or backoff_seconds < 0:
        raise ValueError(f"`backoff_seconds` has to be a non-negative number but is {backoff_seconds!r}.")


def call_with_retries(
    operation,
    what: str,
    advice: str,
    retries: int = DEFAULT_RETRIES,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
):
    r"""
    Calls `operation()` inside `hub_timeouts(connect_timeout, read_timeout)` up to `retries` times.

    Transient failures (no answer, timeouts, HTTP 408/429/5xx) are retried after `backoff_seconds`, doubling before
    each following attempt (or the server's `Retry-After`, if longer); any other error is raised at once. When every
    attempt failed, raises `HubRetriesExhaustedError` saying `what` failed, after how many attempts and how long,
    what the last error was, and `advice` (what to do next).
    """
    _check_retry_arguments(retries, backoff_seconds)
    connect, read = _resolve_timeouts(connect_timeout, read_timeout)
    start = time.monotonic()
    for attempt in range(1, retries + 1):
        try:
            with hub_timeouts(connect, read):
                return operation()
        except Exception as error:
            if not _is_transient(error):
                raise
            elapsed = time.monotonic() - start
            if attempt == retries:
                raise HubRetriesExhaustedError(
                    f"{what} failed after {retries} attempt{'s' if retries > 1 else ''} over {elapsed:.1f} s "
                    f"(connect timeout {connect:g} s, read timeout {read:g} s). "
                    f"The last error was: {_describe(error)}. {advice}",
                    attempts=retries,
                    elapsed=elapsed,
                    last_error=error,
                ) from error
            wait = backoff_seconds * 2 ** (attempt - 1)
            retry_after = _retry_after(error)
            if retry_after is not None and retry_after > wait:
                wait = retry_after
            logger.warning(
                f"{what} failed (attempt {attempt}/{retries}, {elapsed:.1f} s so far): {_describe(error)}. "
                f"Retrying in {wait:g} s."
            )
            time.sleep(wait)


def create_repo_with_retries(
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    *,
    retries: int = DEFAULT_RETRIES,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    endpoint: str | None = None,
) -> str:
    r"""
    Creates the model repo `repo_id` on the Hub, or finds it if it exists (its visibility is then left as it is),
    with the timeouts and retries of `push_folder_to_hub`. Returns the repo id as the Hub names it (`"user/name"`,
    also when `repo_id` was given without a namespace).

    Args:
        repo_id (`str`): The repo, as `"user_or_org/name"` (or `"name"` for the token's user).
        token (`str`, *optional*): A Hub token with write access. Defaults to the cached login or `HF_TOKEN`.
        private (`bool`, *optional*, defaults to `False`): Whether a newly created repo is private.
        retries (`int`, *optional*, defaults to 3): How many attempts to make in total.
        backoff_seconds (`float`, *optional*, defaults to 2.0): The wait before the second attempt; it doubles
            before each following one.
        connect_timeout (`float`, *optional*, defaults to 10): Seconds to wait for a connection.
        read_timeout (`float`, *optional*, defaults to 60): Seconds to wait for the server to send (or accept) a byte.
        endpoint (`str`, *optional*): The Hub's URL. Defaults to `HF_ENDPOINT` or https://huggingface.co.

    Raises:
        `HubRetriesExhaustedError` (a `RuntimeError`) when every attempt failed with a transient error;
        `huggingface_hub.errors.HfHubHTTPError` at once for errors a retry cannot fix (e.g. 401, 403).
    """
    api = HfApi(token=token, endpoint=endpoint)
    return call_with_retries(
        lambda: api.create_repo(repo_id, private=private, exist_ok=True).repo_id,
        what=f"Creating the Hub repo {repo_id!r} at {api.endpoint}",
        advice="Nothing was changed locally; check the network (and `HF_ENDPOINT`, proxies) and run again.",
        retries=retries,
        backoff_seconds=backoff_seconds,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def push_folder_to_hub(
    folder,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload pipeline",
    retries: int = DEFAULT_RETRIES,
    ignore_patterns: list[str] | None = None,
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    endpoint: str | None = None,
) -> str:
    r"""
    Creates the model repo `repo_id` if needed and uploads `folder` to it in one commit.

    Every request has a connect and a read timeout, so a Hub that never answers fails the attempt instead of
    hanging. Transient failures (no answer, timeouts, HTTP 408, 429 and 5xx) are retried with exponential backoff;
    other errors (e.g. 401/403/404) are raised at once. Files already on the Hub with the same content are not
    uploaded again, and nothing local is ever changed or deleted, so a failed push can simply be run again.

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
        connect_timeout (`float`, *optional*, defaults to 10):
            Seconds to wait for a connection (or `DIFFUSERS_SIMPLE_HUB_CONNECT_TIMEOUT`).
        read_timeout (`float`, *optional*, defaults to 60):
            Seconds to wait for the server to send (or accept) a byte (or `DIFFUSERS_SIMPLE_HUB_READ_TIMEOUT`).
            `huggingface_hub` itself retries some requests (preupload, LFS uploads) a few times on timeouts, so one
            attempt may take several read timeouts.
        endpoint (`str`, *optional*):
            The Hub's URL. Defaults to `HF_ENDPOINT` or https://huggingface.co.

    Returns:
        `str`: The URL of the commit.

    Raises:
        `HubRetriesExhaustedError` (a `RuntimeError`) when every attempt failed with a transient error; its message
        says how many attempts over how long, that the local folder is intact and the command to try again.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"`folder` has to be an existing directory but is {str(folder)!r}.")
    api = HfApi(token=token, endpoint=endpoint)

    def push():
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, ignore_patterns=ignore_patterns
        ).commit_url

    command = f"diffusers-simple-publish {shlex.quote(str(folder))} --hub_model_id {shlex.quote(repo_id)}"
    if private:
        command += " --private"
    return call_with_retries(
        push,
        what=f"Pushing {str(folder)!r} to the Hub repo {repo_id!r} at {api.endpoint}",
        advice=(
            f"The local folder is unchanged and complete (nothing was deleted), and nothing is committed on the Hub "
            f"until a push succeeds: run `{command}` (or `python -m diffusers_simple_training.publish ...` with the "
            f"same arguments) to try again."
        ),
        retries=retries,
        backoff_seconds=backoff_seconds,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
