"""`tellme eval` on the bundled demo model reproduces the figures published in its MODEL_CARD.md.

The card holds the verbatim output of an eval command in a ```text block that starts with
``$ tellme eval ...``; this test reruns that command and compares every figure line (all but
the header naming the file's absolute path, and the run times), character for character.
"""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from tellme.host.cli import main
from tellme.host.generate import DEFAULT_MODEL

CARD = DEFAULT_MODEL.parent / "MODEL_CARD.md"
_TIME = re.compile(r", [0-9.]+ s\)")


def _published():
    text = CARD.read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n(\$ tellme eval[^\n]*)\n(.*?)```", text, re.S)
    assert blocks, f"{CARD}: no ```text block starting with '$ tellme eval'"
    return [(shlex.split(cmd[2:]), out) for cmd, out in blocks]


def _cases():
    if not CARD.exists():
        return []
    out = []
    for i, (argv, _) in enumerate(_published()):
        short = "--max-tokens" in argv and int(argv[argv.index("--max-tokens") + 1]) <= 2048
        out.append(pytest.param(i, marks=() if short else pytest.mark.slow))
    return out


@pytest.mark.parametrize("index", _cases())
def test_eval_reproduces_model_card(index, capsys):
    """Blocks over at most 2048 tokens run by default; the full held-out text is `slow`."""
    argv, published = _published()[index]
    assert main(argv[1:]) == 0
    got = capsys.readouterr().out
    # The first line names the text file by its absolute path, which depends on the checkout.
    norm = lambda s: [_TIME.sub(")", line.rstrip()) for line in s.strip().splitlines()[1:]]  # noqa
    assert norm(got) == norm(published) and len(norm(got)) == 4


def test_eval_windows_and_errors(tmp_path, capsys):
    from tellme.host.evaluate import evaluate
    from tellme.host.generate import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer()
    ids = tok.encode((DEFAULT_MODEL.parent / "heldout.txt").read_text()[:3000])
    r = evaluate(model, ids[:300], window=100)
    assert r.scored == 3 * 99                    # every token but each window's first
    r2 = evaluate(model, ids[:300], window=100)
    assert r.nll == r2.nll                       # deterministic
    assert 1.0 < r.ppl("float") < model.config.vocab_size
    with pytest.raises(ValueError, match="window"):
        evaluate(model, ids, window=model.config.max_context + 1)
    assert main(["eval", "--text", str(tmp_path / "none.txt")]) == 2
    assert "text file not found" in capsys.readouterr().err


def test_perplexity_matches_direct_computation():
    """NLL from evaluate() equals a direct log-softmax over one forward pass."""
    from tellme.host.evaluate import evaluate
    from tellme.host.generate import load_model_and_tokenizer
    from tellme.sim.golden.model import forward

    model, tok = load_model_and_tokenizer()
    ids = tok.encode((DEFAULT_MODEL.parent / "heldout.txt").read_text()[:600])[:120]
    r = evaluate(model, ids, numerics=("hw",))
    lg = forward(model, ids[:-1], numerics="hw").astype(np.float64)
    lp = lg - np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - lg.max(1, keepdims=True)
    nll = -lp[np.arange(len(ids) - 1), ids[1:]].mean()
    assert abs(r.nll["hw"] - nll) < 1e-9


def test_eval_int8_kv_mode():
    """``--kv int8``: hw numerics over an int8 KV cache, scored beside hw; it is exactly the
    golden model with every K/V row read as kv_dequant_int8(kv_quant_int8(row))."""
    from tellme.host.evaluate import KV_INT8, evaluate
    from tellme.host.generate import load_model_and_tokenizer
    from tellme.sim.golden.attention_hw import kv_dequant_int8, kv_quant_int8
    from tellme.sim.golden.model import GoldenModel

    model, tok = load_model_and_tokenizer()
    ids = tok.encode((DEFAULT_MODEL.parent / "heldout.txt").read_text()[:600])[:60]
    r = evaluate(model, ids, numerics=("hw",), kv="int8")
    assert list(r.nll) == ["hw", KV_INT8] and r.nll[KV_INT8] != r.nll["hw"]
    assert 0.8 <= r.kv_int8_agreement <= 1.0
    assert any(line.startswith(f"{KV_INT8} vs hw top-1 agreement") for line in r.lines())
    # the same NLL from a hand-wired model whose cache is int8 on the way into attention
    gm = GoldenModel(model, "hw")
    base = gm.ops

    class Ops:
        def __getattr__(self, n):
            return getattr(base, n)

        def attention_prefill(self, q, k, v, start, c=None):
            rt = lambda x: kv_dequant_int8(*kv_quant_int8(x))      # noqa: E731
            return base.attention_prefill(q, rt(k), rt(v), start, c)

    gm.ops = Ops()
    lg = gm.forward(np.asarray(ids[:-1]), gm.new_cache(len(ids))).astype(np.float64)
    m = lg.max(1, keepdims=True)
    lp = lg - m - np.log(np.exp(lg - m).sum(1, keepdims=True))
    assert abs(r.nll[KV_INT8] - (-lp[np.arange(len(ids) - 1), ids[1:]].mean())) < 1e-9
    with pytest.raises(ValueError, match="kv must be"):
        evaluate(model, ids, kv="fp8")
