"""The offline q/k row permutation for adjacent RoPE pairing (quant/rope_permute.py) gives the
same logits as the original half-paired model in the golden model."""

import numpy as np
import pytest

from tellme.quant.random_models import random_model, tiny_config
from tellme.quant.rope_permute import half_to_adjacent, permute_rows, to_adjacent
from tellme.sim.golden.model import GoldenModel


def test_perm_map():
    np.testing.assert_array_equal(half_to_adjacent(8), [0, 4, 1, 5, 2, 6, 3, 7])
    with pytest.raises(ValueError, match="even"):
        half_to_adjacent(7)
    with pytest.raises(ValueError, match="rows"):
        permute_rows(np.zeros((10, 4)), 2, 4)


def _logits(model, numerics, ids):
    gm = GoldenModel(model, numerics=numerics)
    cache = gm.new_cache(32)
    out = gm.forward(ids[:5], cache)
    dec = gm.forward(ids[5:6], cache)          # decode path too
    return np.concatenate([out, dec])


@pytest.mark.parametrize("act", ["relu2", "silu"])
def test_permuted_model_same_logits(act):
    model = random_model(tiny_config(activation=act), seed=11)
    adj = to_adjacent(model)
    assert adj.rope_pairing == "adjacent" and model.rope_pairing == "half"
    assert not np.array_equal(adj.layers[0].linears["q_proj"].w,
                              model.layers[0].linears["q_proj"].w)
    ids = np.array([5, 17, 200, 3, 99, 42])
    # hw numerics: scores are exact integer sums over the head dimension -> bit identical
    np.testing.assert_array_equal(_logits(adj, "hw", ids), _logits(model, "hw", ids))
    # float numerics: q.k in float32 BLAS sums in another order after the permutation; the
    # difference is float32 rounding (relative ~1e-6), far below any model-level effect
    np.testing.assert_allclose(_logits(adj, "float", ids), _logits(model, "float", ids),
                               rtol=1e-4, atol=1e-4)
