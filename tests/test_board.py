"""`tellme board check|reset|deploy` (host/board.py) on the PYNQ-shaped fake backed by the
GoldenDevice (tests/support/fake_pynq.py): the simulation device the issue 14 CI check runs on.

What this proves: with the board's versions, enough CMA and a matching bitstream/manifest/
weight file, every check passes (the sim target with a sim weight file, and the kv260 target
with the bundled demo model and a manifest from hw/vivado.py's writer); each failure (PYNQ
version, NumPy 2, CMA, manifest/weight-file target, missing .hwh, ID and BUILD_HASH after the
load) is a FAIL line naming the numbers and exit status 2; reset prints the dump and leaves
the device idle after a hang; deploy's dry run prints the exact ssh/scp commands and a
missing ssh, a missing or malformed ssh target and an unreachable board are clear one-line
errors, and the remote command's quoting survives a real shell. Nothing contacts a network
address. Not proven: anything on a real board (none on hand).
"""

from __future__ import annotations

import io
import json
import shlex

import pytest

from tellme import cli
from tellme.host import board
from tellme.host.board import BoardEnv, BoardError, plan_deploy, run_check, run_deploy, run_reset
from tellme.host.generate import DEFAULT_MODEL
from tellme.quant.format import write_weight_file
from tellme.quant.random_models import random_model, tiny_config
from tellme.spec.targets import TILINGS

from .support import fake_pynq

BOARD_VERSIONS = dict(python_version=(3, 10, 12), numpy_version="1.26.4")


def meminfo(tmp_path, free_kb=900 << 10, total_kb=1000 << 10):
    p = tmp_path / "meminfo"
    p.write_text(f"MemTotal:        4007468 kB\nCmaTotal:      {total_kb} kB\n"
                 f"CmaFree:       {free_kb} kB\n")
    return p


@pytest.fixture
def sim_setup(tmp_path):
    """A sim bitstream (fake), its manifest with tiling, and a sim weight file."""
    bit = fake_pynq.write_bitstream(tmp_path, "sim", 0x5151CAFE)
    man = json.loads(bit.with_suffix(".json").read_text())
    t = TILINGS["sim"]
    man["tiling"] = {"name": "sim", "t": t.t, "q": t.q}
    bit.with_suffix(".json").write_text(json.dumps(man))
    tiny = random_model(tiny_config(intermediate_size=96), seed=3)   # K blocks fit sim's 8
    model = write_weight_file(tiny, tmp_path / "tiny.tlm", t, meta={"target": "sim"})
    return bit, model


def check(tmp_path, bit, model, fake=None, max_context=None, **env):
    fake = fake or fake_pynq.FakeBoard()
    e = BoardEnv(pynq=fake_pynq.make_module(fake), meminfo=env.pop("meminfo", None)
                 or meminfo(tmp_path), **{**BOARD_VERSIONS, **env})
    out = io.StringIO()
    rep = run_check(bit, model, max_context, e, out)
    return rep, out.getvalue()


def statuses(rep):
    return {c.name: c.status for c in rep.checks}


def test_all_ok_on_the_simulation_device(tmp_path, sim_setup):
    bit, model = sim_setup
    rep, text = check(tmp_path, bit, model)
    assert not rep.failed, text
    st = statuses(rep)
    for name in ("pynq", "python", "numpy", "files", "model", "cma", "manifest", "load", "ID",
                 "VERSION", "BUILD_HASH", "CAP_TLMM", "CAP_ROWS", "identity"):
        assert st[name] == "ok", (name, text)
    assert "ok    pynq        PYNQ 3.0.1" in text
    assert "BUILD_HASH  0x5151cafe = manifest" in text
    assert "CmaFree 900.0 MiB of CmaTotal 1,000.0 MiB" in text
    assert text.rstrip().endswith(f"board check: all {len(rep.checks)} checks passed")


def test_all_ok_with_the_vivado_manifest_and_the_demo_model(tmp_path):
    from tellme.hw.vivado import manifest

    bit = fake_pynq.write_bitstream(tmp_path, "kv260", 0x0BADF00D)
    man = manifest("kv260", 0x0BADF00D, "2022.1", 249.9975, {}, {"wns": "0.1", "whs": "0.02"},
                   {"bit": bit.name, "hwh": bit.with_suffix(".hwh").name})
    bit.with_suffix(".json").write_text(json.dumps(man))
    rep, text = check(tmp_path, bit, None, max_context=256)      # the bundled demo model
    assert not rep.failed, text
    assert f"ok    model       {DEFAULT_MODEL.name}" in text
    assert "model.tlm at context 256 on kv260 needs 7.0 MiB" in text


@pytest.mark.parametrize("env,name,match", [
    (dict(pynq_version="2.7.0"), "pynq", "PYNQ 2.7.0, expected 3.0.1"),
    (dict(numpy_version="2.1.3"), "numpy", "NumPy 2.1.3, expected 1.x"),
    (dict(python_version=(3, 8, 10)), "python", "Python 3.8.10, tellme needs >= 3.10"),
])
def test_versions_fail(tmp_path, sim_setup, env, name, match):
    rep, text = check(tmp_path, *sim_setup, **env)
    assert [c.name for c in rep.failed] == [name], text
    assert match in text and f"board check: 1 of {len(rep.checks)} checks failed: {name}" in text


def test_other_pynq_3_0_and_python_are_warnings(tmp_path, sim_setup):
    rep, text = check(tmp_path, *sim_setup, pynq_version="3.0.0", python_version=(3, 12, 1))
    assert not rep.failed and statuses(rep)["pynq"] == statuses(rep)["python"] == "warn"
    assert "(2 warnings)" in text


def test_cma_too_small(tmp_path, sim_setup):
    rep, text = check(tmp_path, *sim_setup, meminfo=meminfo(tmp_path, free_kb=50, total_kb=100))
    assert [c.name for c in rep.failed] == ["cma"], text
    assert ("FAIL  cma         tiny.tlm at context 128 on sim needs " in text
            and "CmaFree 0.0 MiB of CmaTotal 0.1 MiB (raise cma=" in text)
    no_cma = tmp_path / "nocma"
    no_cma.write_text("MemTotal: 100 kB\n")
    rep, text = check(tmp_path, *sim_setup, meminfo=no_cma)
    assert "no CmaTotal in" in text and [c.name for c in rep.failed] == ["cma"]


def test_manifest_and_weight_file_target_mismatch(tmp_path, sim_setup):
    bit = fake_pynq.write_bitstream(tmp_path, "kv260", 7)
    rep, text = check(tmp_path, bit, sim_setup[1])
    assert "manifest" in [c.name for c in rep.failed], text
    assert ("the weight file is laid out for T=4 Q=4 (converted for sim), the bitstream is a "
            "kv260 build with T=28 Q=16: convert with --target kv260") in text
    assert "load" in [c.name for c in rep.failed]          # not attempted


def test_missing_hwh(tmp_path, sim_setup):
    bit, model = sim_setup
    bit.with_suffix(".hwh").unlink()
    rep, text = check(tmp_path, bit, model)
    assert {c.name for c in rep.failed} == {"files", "load"}, text
    assert f"missing beside {bit.parent}: {bit.with_suffix('.hwh').name}" in text


def test_id_and_build_hash_mismatch_after_the_load(tmp_path, sim_setup):
    bit, model = sim_setup
    stale = fake_pynq.write_bitstream(tmp_path, "sim", 1, stem="stale", manifest_hash=2)
    rep, text = check(tmp_path, stale, model)
    assert [c.name for c in rep.failed] == ["BUILD_HASH"], text
    assert "BUILD_HASH  0x00000001, the manifest says 0x00000002" in text
    fake = fake_pynq.FakeBoard()
    mod = fake_pynq.make_module(fake)
    real = mod.Overlay

    class WrongDesign(real):            # another design answers at the control address
        def download(self):
            super().download()
            fake.device._consts["ID"] = 0x12345678

    mod.Overlay = WrongDesign
    e = BoardEnv(pynq=mod, meminfo=meminfo(tmp_path), **BOARD_VERSIONS)
    rep = run_check(bit, model, None, e, io.StringIO())
    assert {c.name for c in rep.failed} == {"ID", "identity"}
    assert "0x12345678, the manifest says 0x544c4d45" in rep.failed[0].detail


def test_cli_check_on_this_machine(tmp_path, sim_setup, monkeypatch, capsys):
    """The command itself with the fake installed as ``pynq``: this machine's Python and NumPy
    are reported as they are (the development venv has NumPy 2: that line FAILs)."""
    import numpy

    fake_pynq.install(monkeypatch, fake_pynq.FakeBoard())
    bit, model = sim_setup
    rc = cli.main(["board", "check", "--bitstream", str(bit), "--model", str(model),
                   "--meminfo", str(meminfo(tmp_path))])
    out, err = capsys.readouterr()
    assert "BUILD_HASH  0x5151cafe = manifest" in out and "ok    identity" in out
    if numpy.__version__.startswith("1."):
        assert rc == 0, out
    else:
        assert rc == 2 and "tellme: error: board check: 1 of" in err and "failed: numpy" in err


# --------------------------------------------------------------------------- reset

def test_reset_prints_the_dump_and_leaves_the_device_idle(tmp_path, sim_setup):
    from tellme.host.driver import Driver, DriverError
    from tellme.host.pynq_device import PynqDevice

    bit, model = sim_setup
    fake = fake_pynq.FakeBoard()
    mod = fake_pynq.make_module(fake)
    d = Driver(PynqDevice(bit, pynq=mod), model, max_context=32, timeout_s=0.1)
    d.dev.soft_reset = lambda: None          # an interrupted run: nobody reset the device
    fake.device.inject("hang", record=3)
    with pytest.raises(DriverError):
        d.prefill([1, 2, 3])
    assert fake.device.fields("STATUS")["BUSY"]
    out = io.StringIO()
    assert run_reset(bit, pynq=mod, out=out) == 0
    text = out.getvalue()
    assert text.startswith(f"{bit.name}: attached to the loaded design; registers before")
    before, after = text.split("after CMD.SOFT_RESET:")
    assert "BUSY=1" in before and "BUSY=1" not in after and "PROG_ADDR_LO" in after
    assert text.rstrip().endswith("idle")
    assert not fake.device.fields("STATUS")["BUSY"] and fake.log.count(("load", bit.name)) == 1


def test_reset_downloads_when_another_design_is_loaded(tmp_path, sim_setup):
    bit, _ = sim_setup
    fake = fake_pynq.FakeBoard()
    out = io.StringIO()
    assert run_reset(bit, pynq=fake_pynq.make_module(fake), out=out) == 0
    assert "downloaded" in out.getvalue() and ("load", bit.name) in fake.log
    with pytest.raises(BoardError, match="no bitstream"):
        run_reset(None, pynq=fake_pynq.make_module(fake))


# --------------------------------------------------------------------------- deploy

def test_deploy_dry_run_commands(tmp_path, sim_setup, capsys):
    bit, model = sim_setup
    rc = cli.main(["board", "deploy", "kria.local", "--user", "ubuntu", "--bitstream", str(bit),
                   "--model", str(model), "--max-context", "64", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 7
    cmds = [shlex.split(x) for x in lines]
    wheel = f"tellme-{__import__('tellme').__version__}-py3-none-any.whl"
    assert cmds[0][1:5] == ["-m", "pip", "wheel", "--no-deps"]
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    at = "ubuntu@kria.local"
    assert cmds[1] == ["ssh", *opts, at, "mkdir -p tellme/bitstreams tellme/models"]
    assert cmds[2] == ["scp", *opts, str(bit), str(bit.with_suffix(".hwh")),
                       str(bit.with_suffix(".json")), f"{at}:tellme/bitstreams/"]
    assert cmds[3] == ["scp", *opts, str(model), f"{at}:tellme/models/"]
    assert cmds[4][:-2] == ["scp", *opts] and cmds[4][-2].endswith(f"build/board/{wheel}")
    assert cmds[4][-1] == f"{at}:tellme/"
    # pip and check run as root in the PYNQ environment (the image's profile scripts)
    prelude = ("if [ -f /etc/profile.d/pynq_venv.sh ]; then . /etc/profile.d/pynq_venv.sh; "
               "fi; if [ -f /etc/profile.d/xrt_setup.sh ]; then . /etc/profile.d/xrt_setup.sh;"
               " fi; exec ")
    assert cmds[5][:-1] == ["ssh", *opts, at]
    assert shlex.split(cmds[5][-1]) == [
        "sudo", "-n", "bash", "-c", f"{prelude}{board.BOARD_PYTHON} -m pip install --no-deps "
                                    f"--force-reinstall tellme/{wheel}"]
    assert shlex.split(cmds[6][-1]) == [
        "sudo", "-n", "bash", "-c", f"{prelude}{board.BOARD_PYTHON} -m tellme.cli board check "
                                    f"--bitstream tellme/bitstreams/{bit.name} --model "
                                    f"tellme/models/tiny.tlm --max-context 64"]


def test_board_command_runs_in_a_shell(tmp_path):
    """What ssh hands the board's login shell: the quoting survives a real sh (no sudo, the
    profile scripts absent here), and the command's exit status comes back."""
    import subprocess
    import sys

    arg = "it's \"quoted\" $HOME"
    cmd = board.board_command([sys.executable, "-c", "import sys; print(sys.argv[1]); "
                               "sys.exit(3)", arg], sudo=False)
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (3, arg + "\n")


def test_deploy_errors(tmp_path, sim_setup):
    bit, model = sim_setup
    plan = plan_deploy("board", bit, model, root=tmp_path)

    def never(cmd, **kw):
        raise AssertionError(f"ran {cmd}")

    with pytest.raises(BoardError, match=r"ssh and scp not found on PATH.*openssh-client"):
        run_deploy(plan, which=lambda name: None, run=never)

    class Res:
        def __init__(self, rc):
            self.returncode = rc

    seen = []

    def run(cmd, **kw):
        seen.append(cmd[0])
        if cmd[0] != "ssh":                      # the local wheel build "writes" the wheel
            plan.wheel.parent.mkdir(parents=True, exist_ok=True)
            plan.wheel.write_bytes(b"")
            return Res(0)
        return Res(255)

    with pytest.raises(BoardError, match=r"cannot reach the board \(ssh exit 255, board\)"):
        run_deploy(plan, which=lambda name: f"/usr/bin/{name}", run=run, out=io.StringIO())
    assert seen == [plan.local[0][0], "ssh"]
    with pytest.raises(BoardError, match=r"nope.bit: no such file"):
        plan_deploy("board", tmp_path / "nope.bit", model)


def test_deploy_needs_an_ssh_target(sim_setup, monkeypatch, capsys):
    """No HOST and no $TELLME_BOARD: one line, exit 2, nothing run or built; $TELLME_BOARD is
    the default; what ssh would read as an option is refused."""
    import subprocess

    bit, model = sim_setup
    monkeypatch.delenv("TELLME_BOARD", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    rc = cli.main(["board", "deploy", "--bitstream", str(bit), "--model", str(model)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["tellme: error: no board to deploy to: give its ssh address "
                               "(tellme board deploy HOST ...) or set TELLME_BOARD"]
    monkeypatch.setenv("TELLME_BOARD", "kv260.lan")
    plan = plan_deploy(None, bit, model, user="ubuntu")
    assert plan.target == "ubuntu@kv260.lan" and plan.remote[0][-2] == "ubuntu@kv260.lan"
    for host, user in (("-oProxyCommand=x", None), ("a b", None), ("kv", "-l"), ("kv", "u@x")):
        with pytest.raises(BoardError, match="is not an ssh"):
            plan_deploy(host, bit, model, user=user)
    with pytest.raises(BoardError, match="give the user once"):
        plan_deploy("root@kv", bit, model, user="ubuntu")
    v6 = plan_deploy("fe80::1", bit, model, user="ubuntu")        # scp needs the brackets
    assert v6.remote[0][-2] == "ubuntu@fe80::1"
    assert v6.remote[1][-1] == "ubuntu@[fe80::1]:tellme/bitstreams/"
