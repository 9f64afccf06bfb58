"""Test setup shared by every test file: a local Hub for the real Hugging Face clients.

At import time, before any test module can import huggingface_hub / datasets / diffusers (they read
their settings at import), this starts tests/hub_server.py on 127.0.0.1 and points the clients and all
subprocesses at it through the environment, with a temporary HF_HOME so no real cache is touched.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

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


# A fresh interpreter in which `import diffusers_simple` fails, as where the package is not installed: what a
# checkpoint loaded with `trust_remote_code=True` must run in.
WITHOUT_PACKAGE_PREAMBLE = """
import importlib.abc, sys
class NoDiffusersSimple(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "diffusers_simple":
            raise ImportError("diffusers_simple is not installed here")
sys.meta_path.insert(0, NoDiffusersSimple())
try:
    import diffusers_simple
    raise SystemExit("diffusers_simple should not be importable")
except ImportError:
    pass
"""


def run_without_package(script: str, cwd) -> subprocess.CompletedProcess:
    """Runs `script` (dedented) in a fresh interpreter where `diffusers_simple` cannot be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    source = WITHOUT_PACKAGE_PREAMBLE + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
