"""The host driver (host/driver.py) over the GoldenDevice (host/golden_device.py) and over the
PYNQ device (host/pynq_device.py) on a PYNQ-shaped layer backed by the GoldenDevice.

What this proves: the driver's loads, programs, syncs and register protocol reproduce
``tellme logits --numerics hw`` bit for bit on the demo model (prefill, decode steps, host LM
head) and the golden backend's generated text; identity mismatches, hangs, error runs, too
large weight files and too long prompts end in the stated errors, and the next run on the
same device succeeds. Not proven here: anything about the RTL (tests/rtl/test_top.py runs
the driver on the top).
"""

from __future__ import annotations

import numpy as np
import pytest

from tellme.host import backends
from tellme.host.backends import create
from tellme.host.device import DeviceError
from tellme.host.driver import DeviceBackend, Driver, DriverError
from tellme.host.generate import DEFAULT_MODEL, GenerateError, generate, load_model_and_tokenizer
from tellme.host.golden_device import GoldenDevice
from tellme.host.sampling import SamplingParams
from tellme.sim.golden.model import forward
from tellme.spec.registers import REGS, const_words, encode

from .support import fake_pynq

IDS = [5, 17, 300, 9, 1000, 42, 7, 4095]
PROMPT = "And God said"


def _same(got, want, what=""):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), what


@pytest.fixture(scope="module")
def bundle():
    return load_model_and_tokenizer()


@pytest.fixture(scope="module")
def want(bundle):
    """`tellme logits --numerics hw-pl` on IDS: what a device with the PL LM head returns
    (every build has one; the demo's hidden size fits it)."""
    return forward(bundle[0], np.asarray(IDS), numerics="hw", head="pl").astype(np.float32)


@pytest.fixture(scope="module")
def want_host(bundle):
    """`tellme logits --numerics hw` on IDS: the host's LM head on the device's hidden rows."""
    return forward(bundle[0], np.asarray(IDS), numerics="hw").astype(np.float32)


@pytest.fixture(scope="module")
def drv():
    return Driver(GoldenDevice("kv260"), DEFAULT_MODEL, max_context=64, timeout_s=5)


def _prefill_decode(d, want):
    _same(d.prefill(IDS[:5]), want[4], "prefill")
    for i in range(5, len(IDS)):
        _same(d.decode(IDS[i]), want[i], f"decode at {i}")


def test_logits_and_prefill_decode_are_bit_exact(drv, want):
    assert drv.mmap.output == "logits"               # the PL LM head, chosen from CAP_ROWS
    _same(drv.logits(IDS), want, "logits of every position")
    _prefill_decode(drv, want)
    assert drv.dev.runs >= 1 + 1 + 3 and drv.dev.reg("RD_BEATS") > 0


def test_hidden_output_with_the_host_lm_head(want_host):
    d = Driver(GoldenDevice("kv260"), DEFAULT_MODEL, max_context=64, output="hidden",
               max_tokens=4)                     # the prompt runs in two chunks
    _prefill_decode(d, want_host)


def test_a_hidden_size_the_lm_head_cannot_take_means_hidden_rows():
    """hidden 60 is no multiple of the LM-head unit's code beat (spec.lm_head.Q_BEAT): the
    driver asks for the final hidden rows and applies the host's head, bit-exact against
    GoldenModel(numerics="hw")."""
    from tellme.quant.random_models import random_model, tiny_config

    model = random_model(tiny_config(hidden_size=60, intermediate_size=88), seed=5)
    d = Driver(GoldenDevice("sim"), model, max_context=32)
    assert d.mmap.output == "hidden" and d.mmap.regions["head"].size == 0
    ids = [3, 1, 4, 1, 5]
    want = forward(model, np.asarray(ids), numerics="hw")
    _same(d.prefill(ids), want[-1], "prefill, host head")


@pytest.mark.parametrize("params,seed", [(SamplingParams(), 0),
                                         (SamplingParams(temperature=0.8, top_k=40), 1)])
def test_generation_equals_the_golden_backend(bundle, drv, params, seed):
    model, tok = bundle
    kw = dict(max_new_tokens=8, params=params, seed=seed, stop_at_eos=False)
    g = generate(create("golden", model, numerics="hw-pl"), tok, PROMPT, **kw)
    d = generate(DeviceBackend(model, driver=drv), tok, PROMPT, **kw)
    assert d.tokens == g.tokens and d.text == g.text
    assert d.backend == "device:golden-device" and d.numerics == "hw"


# --------------------------------------------------------------------------- identity

@pytest.mark.parametrize("dev,match", [
    (GoldenDevice("sim"), r"tiling T=28 Q=16 \(converted for kv260\).*sim build with "
                          r"tiling T=4 Q=4"),
    (GoldenDevice("kv260", const_overrides={"VERSION": encode("VERSION", REGMAP=1, PROGRAM=1,
                                                              MEMORY_MAP=1)}),
     r"device program v1 \(host v3\)"),
    (GoldenDevice("kv260", const_overrides={"CAP_BUILD": const_words("kv260", 0, None,
                                                                     ("fp24",))["CAP_BUILD"]}),
     r"device KV formats fp24: this host's programs \(format v3\) keep an int8 KV cache"),
    (GoldenDevice("kv260", const_overrides={"ID": 0x12345678}),
     r"ID reads 0x12345678, expected 0x544c4d45"),
    (GoldenDevice("kv260", const_overrides={"CAP_ROWS": 0x100}),
     r"CAP_ROWS 0x00000100 differs from the kv260 build's 0x10101b00"),
])
def test_identity_mismatch_is_refused_naming_both(dev, match):
    with pytest.raises(DriverError, match=match):
        Driver(dev, DEFAULT_MODEL, max_context=32)


# --------------------------------------------------------------------------- robustness

def test_hang_times_out_with_a_register_dump_then_the_next_run_works(want):
    dev = GoldenDevice("kv260")
    d = Driver(dev, DEFAULT_MODEL, max_context=32, timeout_s=0.2)
    dev.inject("hang", record=7)
    with pytest.raises(DriverError) as e:
        d.prefill(IDS[:5])
    msg = str(e.value)
    assert "did not finish within 0.2 s" in msg and "record 7 (ROPE, layer 0)" in msg
    for line in ("STATUS", "BUSY=1", "ERR_FLAGS", "ERR_INFO", "PROG_ADDR_LO", "CYCLES",
                 "RD_BEATS", "STALL_TLMM", "soft-reset"):
        assert line in msg, line
    assert not dev.fields("STATUS")["BUSY"]
    _prefill_decode(d, want)


def test_error_response_names_flag_port_and_record_then_the_next_run_works(want):
    dev = GoldenDevice("kv260")
    d = Driver(dev, DEFAULT_MODEL, max_context=32)
    dev.inject("axi_slverr", record=5, port="weights1")
    with pytest.raises(DriverError, match=r"AXI_SLVERR on port weights1 at record 5 "
                                          r"\(LINEAR, layer 0\)"):
        d.prefill(IDS[:5])
    assert dev.reg("ERR_FLAGS") == 0 and dev.reg("IRQ_STATUS") == 0     # cleared by the reset
    _prefill_decode(d, want)


def test_bad_program_names_the_error_code_then_the_next_run_works(want, monkeypatch):
    import tellme.host.driver as drvmod

    d = Driver(GoldenDevice("kv260"), DEFAULT_MODEL, max_context=32)
    good = drvmod.encode_program
    monkeypatch.setattr(drvmod, "encode_program",
                        lambda p: good(p)[:100] + bytes([good(p)[100] ^ 1]) + good(p)[101:])
    with pytest.raises(DriverError, match=r"BAD_PROGRAM code 4 BAD_CHECKSUM \(CRC-32.*\) at "
                                          r"the program header"):
        d.prefill(IDS[:5])
    monkeypatch.setattr(drvmod, "encode_program", good)
    _prefill_decode(d, want)


def test_window_violation_is_an_address_error():
    dev = GoldenDevice("kv260")
    d = Driver(dev, DEFAULT_MODEL, max_context=32)
    dev.set_reg64("WIN_SIZE", d.mmap.region("act").addr - d.base)     # the act region is out
    with pytest.raises(DriverError, match=r"code 9 ADDRESS .* at record 0 \(EMBED\)"):
        d.prefill(IDS[:2])


def test_weight_file_too_large_for_the_device():
    with pytest.raises(DriverError, match=r"model.tlm \(2,846,272 bytes\) does not fit "
                                          r"golden-device: the session needs .* MiB \(weights "
                                          r"2.7 MiB.*budget is 2.0 MiB"):
        Driver(GoldenDevice("kv260", memory_bytes=2 << 20), DEFAULT_MODEL, max_context=32)


def test_prompt_longer_than_the_context(bundle, drv):
    with pytest.raises(DriverError, match=r"the prompt is 65 tokens .* longer than the "
                                          r"configured context of 64 tokens"):
        drv.prefill([1] * 65)
    model, tok = bundle
    long = " ".join(["And God said"] * 40)
    with pytest.raises(GenerateError, match="longer than the model context of 64"):
        generate(DeviceBackend(model, driver=drv), tok, long, max_new_tokens=2)


def test_golden_device_register_semantics():
    dev = GoldenDevice("zcu104", build_hash=0xABCD1234)
    words = const_words("zcu104", 0xABCD1234)
    for name, word in words.items():
        assert dev.reg(name) == word
    assert dev.reg("TIMEOUT") == REGS["TIMEOUT"].reset == 1 << 24
    dev.set_reg("ID", 0)                                     # RO: ignored
    assert dev.reg("ID") == words["ID"]
    dev.set_reg("CTRL", IRQ_EN_DONE=1)
    assert dev.fields("CTRL") == {"IRQ_EN_DONE": 1, "IRQ_EN_ERROR": 0}
    assert dev.reg("CMD") == 0                               # W1S reads 0
    dev.read32(0xFFC)                                        # unmapped: 0, sets BAD_REG
    assert dev.fields("ERR_FLAGS")["BAD_REG"] == 1
    dev.set_reg("ERR_FLAGS", BAD_REG=1)                      # W1C
    assert dev.reg("ERR_FLAGS") == 0
    dev.set_reg64("PROG_ADDR", 0x60000040)                   # nothing there: BAD_MAGIC
    dev.set_reg("CMD", START=1)
    assert dev.fields("STATUS")["ERROR"] and dev.fields("ERR_INFO")["CODE"] == 1
    assert dev.fields("ERR_INFO")["RECORD"] == 0xFFFF and not dev.irq
    dev.set_reg("CTRL", IRQ_EN_ERROR=1)
    assert dev.irq


# --------------------------------------------------------------------------- PYNQ device

def test_pynq_device_end_to_end_on_the_fake_pynq_layer(tmp_path, monkeypatch, want):
    board = fake_pynq.FakeBoard()
    fake_pynq.install(monkeypatch, board)
    from tellme.host.pynq_device import PynqDevice

    bit = fake_pynq.write_bitstream(tmp_path, "kv260", 0x1234ABCD)
    dev = PynqDevice(bit)
    assert board.log[:2] == [("clear_global_state",), ("load", bit.name)]
    assert dev.irq is not None and dev.reg("BUILD_HASH") == 0x1234ABCD
    d = Driver(dev, DEFAULT_MODEL, max_context=32, timeout_s=5)
    _prefill_decode(d, want)
    assert ("flush", d.base) in board.log and ("invalidate", d.base) in board.log
    board.device.inject("hang")
    d.timeout_s = 0.2
    with pytest.raises(DriverError, match=r"did not finish within 0\.2 s"):
        d.prefill(IDS[:3])
    d.timeout_s = 5
    _prefill_decode(d, want)


def test_pynq_device_refuses_missing_files_stale_designs_and_cma_shortage(tmp_path,
                                                                          monkeypatch):
    board = fake_pynq.FakeBoard(memory_bytes=1 << 20)
    fake_pynq.install(monkeypatch, board)
    from tellme.host.pynq_device import PynqDevice

    bit = fake_pynq.write_bitstream(tmp_path, "kv260", 1)
    bit.with_suffix(".hwh").unlink()
    with pytest.raises(DeviceError, match=r"missing .*\.hwh: PYNQ needs the .bit and the .hwh"):
        PynqDevice(bit)
    stale = fake_pynq.write_bitstream(tmp_path, "kv260", 1, stem="stale", manifest_hash=2)
    with pytest.raises(DeviceError, match=r"BUILD_HASH reads 0x00000001, the manifest "
                                          r"stale.json says 0x00000002"):
        PynqDevice(stale)
    dev = PynqDevice(fake_pynq.write_bitstream(tmp_path, "kv260", 3))
    with pytest.raises(DriverError, match=r"allocation failed: CMA allocation of .* MiB "
                                          r"failed"):
        Driver(dev, DEFAULT_MODEL, max_context=32)


def test_rtl_sim_and_board_say_what_is_missing(monkeypatch):
    ok, _ = backends.resolve("golden").available()
    assert ok
    import tellme.sim.rtl_remote as rr

    monkeypatch.setattr(rr, "rtl_sim_available", lambda: (False, "cocotb is not installed"))
    with pytest.raises(backends.BackendError, match=r"cocotb is not installed"):
        backends.resolve("rtl-sim")
    monkeypatch.delenv("TELLME_BITSTREAM", raising=False)
    with pytest.raises(backends.BackendError, match=r"pynq is not importable|TELLME_BITSTREAM"):
        backends.resolve("board")
