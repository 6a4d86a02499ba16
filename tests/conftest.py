import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    yield
