import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "mgnn", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile("mgnn")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
