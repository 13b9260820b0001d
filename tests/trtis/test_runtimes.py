"""The runtimes the backends serve with, loaded in process from a written repository."""
from __future__ import annotations

import numpy as np
import pytest

from tiny_models import texts
from trtis import repository, runtimes


def loaded(tiny, name: str) -> runtimes.Runtime:
    configs = repository.read_configs(tiny.root)
    return runtimes.load(tiny.root / name, configs[name])


def test_each_platform_runs_in_process_as_its_reference(tiny):
    values = texts(1.5, -2, 40)
    features = loaded(tiny, "tiny-text").run({"text": values})["features"]
    np.testing.assert_array_equal(features, tiny.features(values))
    hidden = loaded(tiny, "tiny-affine").run({"features": features})["hidden"]
    np.testing.assert_allclose(hidden, tiny.hidden(features), rtol=1e-6)
    scores = loaded(tiny, "tiny-head").run({"hidden": hidden})["scores"]
    np.testing.assert_allclose(scores, tiny.scores(values), rtol=1e-5, atol=1e-6)


def test_a_model_without_a_runtime_is_refused_by_name(tiny):
    ensemble = repository.read_configs(tiny.root)["tiny-chain"]
    with pytest.raises(ValueError, match="tiny-chain.*no in-process runtime for backend 'ensemble'"):
        runtimes.load(tiny.root / "tiny-chain", ensemble)


def test_a_bad_text_is_a_value_error_naming_the_model(tiny):
    with pytest.raises(ValueError, match="tiny-text"):
        loaded(tiny, "tiny-text").run({"text": texts("not a number")})
