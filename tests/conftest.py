import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests never reach a real hub: huggingface_hub reads this when first imported, and `qbench
# run` does not fetch under it. The `hub` fixture opens a loopback one for a test.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so a CI result is reproducible and a
# landing is never decided by a lucky draw; HYPOTHESIS_PROFILE=explore draws new ones.
settings.register_profile("reproducible", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Demo data and fitted baselines go to a per-session cache, never the user's."""
    os.environ["QBENCH_CACHE"] = str(tmp_path_factory.mktemp("qbench-cache"))
    os.environ["HF_HUB_CACHE"] = str(tmp_path_factory.mktemp("hf-cache"))
    yield


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hugging Face Hub (tests/support/hub_server.py) that huggingface_hub reaches through
    HF_ENDPOINT, with an empty cache of its own; the test adds the repositories."""
    from huggingface_hub import constants

    from hub_server import FakeHub
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("QBENCH_CACHE", str(tmp_path / "qbench-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield server
    server.close()


@pytest.fixture
def installed_distribution(tmp_path, monkeypatch):
    """`install(name, entry_points)`: a distribution `name` 1.0 on a fresh site folder
    (tmp_path/site, where the test writes its modules) declaring `entry_points` (the text of
    entry_points.txt); the registry loads plugins again on next use. Returns the site folder."""
    from qbench.core import registry

    def install(name: str, entry_points: str) -> Path:
        site = tmp_path / "site"
        dist = site / f"{name.replace('-', '_')}-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(entry_points)
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setattr(registry, "_loaded", False)
        return site
    return install
