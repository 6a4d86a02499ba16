import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Demo data and fitted baselines go to a per-session cache, never the user's."""
    os.environ["QBENCH_CACHE"] = str(tmp_path_factory.mktemp("qbench-cache"))
    yield
