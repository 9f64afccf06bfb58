"""Test setup shared by every test file: a local Hub for the real Hugging Face clients.

At import time, before any test module can import huggingface_hub / datasets / diffusers (they read
their settings at import), this starts tests/hub_server.py on 127.0.0.1 and points the clients and all
subprocesses at it through the environment, with a temporary HF_HOME so no real cache is touched.
"""

import atexit
import os
import shutil
import sys
import tempfile

import pytest


sys.path.insert(0, os.path.dirname(__file__))
from hub_server import HubServer  # noqa: E402


_already_imported = sorted({"huggingface_hub", "datasets", "diffusers"} & set(sys.modules))
if _already_imported:
    raise RuntimeError(
        f"{_already_imported} were imported before tests/conftest.py could point them at the local test Hub; "
        "a pytest plugin or sitecustomize must not import them."
    )

HUB = HubServer().start()
_HF_HOME = tempfile.mkdtemp(prefix="hf_home_")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
atexit.register(HUB.stop)

os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_HOME=_HF_HOME,
    HF_TOKEN="hf_local_test_token",
    HF_HUB_DISABLE_XET="1",  # Xet uploads would go to a storage service the local Hub does not offer
    HF_HUB_DISABLE_TELEMETRY="1",
)
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The local Hub: `create_repo(...)` seeds repos, `requests` lists what the clients asked for."""
    return HUB


@pytest.fixture(autouse=True)
def _only_known_hub_endpoints():
    """Fails a test whose clients called an endpoint the local Hub does not implement (or crashed it)."""
    first = len(HUB.requests)
    yield
    HUB.clear_faults()
    unhandled = HUB.unhandled_requests(since=first)
    if unhandled:
        pytest.fail("The local test Hub could not answer: " + ", ".join(f"{r.method} {r.path}" for r in unhandled))
