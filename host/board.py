"""The board commands (docs/board.md): ``tellme board check``, ``reset`` and ``deploy``.

``check`` runs on a KV260/ZCU104 with Kria-PYNQ/PYNQ 3.0.1 and prints one line per check
(``ok``, ``warn`` or ``FAIL`` and the numbers): PYNQ, Python and NumPy versions; CMA free and
total (``/proc/meminfo``) against the session the weight file needs (``spec.memory_map`` with
the driver's defaults); the bitstream pair and manifest beside it; manifest against this
host's register words and against the weight file (target, tiling); then it loads the
overlay with :class:`~tellme.host.pynq_device.PynqDevice` and compares ID, VERSION,
BUILD_HASH and CAP_* with the manifest and the weight file. Every input is a parameter of
:class:`BoardEnv` (meminfo path, versions, the pynq module), so tests run it on a PYNQ-shaped
fake backed by the GoldenDevice. ``reset`` attaches to the loaded design, soft-resets it
and prints the register dump. ``deploy`` copies the bitstream, the weight file and a wheel of
this package to a board over ssh/scp and runs ``check`` there, in the PYNQ environment (the
image's profile scripts sourced, as root). NumPy only; pynq lazily.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tellme.spec import shell

OK, WARN, FAIL = "ok", "warn", "FAIL"
PYTHON_VERSION = (3, 10)        # Kria-PYNQ 3.0.1 on Ubuntu 22.04, and the ZCU104 image
NUMPY_MAJOR = 1                 # PYNQ 3.0.1's compiled parts are built against NumPy 1.x
MEMINFO = "/proc/meminfo"
#: the PYNQ virtual environment Kria-PYNQ installs (docs/board.md)
BOARD_PYTHON = "/usr/local/share/pynq-venv/bin/python"
#: what `source /etc/profile.d/pynq_venv.sh` gives an interactive root shell: the venv, and
#: XILINX_XRT=/usr, BOARD (Kria-PYNQ writes them there; the PYNQ SD images set XILINX_XRT in
#: xrt_setup.sh). Sourced, when present, before pip and `board check` run on the board.
BOARD_PROFILE = ("/etc/profile.d/pynq_venv.sh", "/etc/profile.d/xrt_setup.sh")
#: the board's address when ``deploy`` is given none
BOARD_ENV_VAR = "TELLME_BOARD"


class BoardError(Exception):
    """A board command that cannot run at all (message says why)."""


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<11} {self.detail}"


@dataclass
class BoardEnv:
    """What ``check`` reads from the machine; each field overrides the real value (None:
    read it). ``pynq``: the pynq module (None: import it; missing is a FAIL)."""
    pynq: object | None = None
    pynq_version: str | None = None
    python_version: tuple | None = None
    numpy_version: str | None = None
    meminfo: str | Path = MEMINFO

    def module(self):
        if self.pynq is None:
            from .pynq_device import _pynq

            self.pynq = _pynq()         # DeviceError when not importable
        return self.pynq


@dataclass
class Report:
    checks: list = field(default_factory=list)

    def add(self, name, status, detail, out=None) -> Check:
        c = Check(name, status, detail)
        self.checks.append(c)
        if out is not None:
            print(c.line(), file=out, flush=True)
        return c

    @property
    def failed(self) -> list:
        return [c for c in self.checks if c.status == FAIL]

    def summary(self) -> str:
        n, f = len(self.checks), self.failed
        w = sum(c.status == WARN for c in self.checks)
        if not f:
            return f"board check: all {n} checks passed" + (f" ({w} warnings)" if w else "")
        return (f"board check: {len(f)} of {n} checks failed: "
                + ", ".join(c.name for c in f))


# --------------------------------------------------------------------------- pieces

def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def read_meminfo(path) -> dict:
    """``{key: bytes}`` of a /proc/meminfo file (kB values)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            mult = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
            out[key.strip()] = int(parts[0]) * mult
    return out


def version_tuple(v: str) -> tuple:
    out = []
    for p in str(v).split("."):
        digits = "".join(ch for ch in p if ch.isdigit()) if p[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_versions(env: BoardEnv, rep: Report, out=None) -> None:
    want = shell.PYNQ_VERSION
    from .device import DeviceError

    try:
        pv = env.pynq_version or getattr(env.module(), "__version__", None) or "unknown"
    except DeviceError as e:
        rep.add("pynq", FAIL, f"{e}; run as root in the PYNQ environment (source "
                              f"/etc/profile.d/pynq_venv.sh)", out)
    else:
        if pv == want:
            rep.add("pynq", OK, f"PYNQ {pv}", out)
        elif version_tuple(pv)[:2] == version_tuple(want)[:2]:
            rep.add("pynq", WARN, f"PYNQ {pv}, expected {want} (Kria-PYNQ {want}; "
                                  f"untested)", out)
        else:
            rep.add("pynq", FAIL, f"PYNQ {pv}, expected {want}: the overlay loading, .hwh "
                                  f"parsing and interrupts are written for PYNQ {want} "
                                  f"(install Kria-PYNQ {want}, docs/board.md)", out)
    py = tuple(env.python_version or sys.version_info[:3])
    pys = ".".join(map(str, py))
    if py[:2] == PYTHON_VERSION:
        rep.add("python", OK, f"Python {pys}", out)
    elif py[:2] < PYTHON_VERSION:
        rep.add("python", FAIL, f"Python {pys}, tellme needs >= 3.10", out)
    else:
        rep.add("python", WARN, f"Python {pys}, the board image has 3.10 (untested)", out)
    if env.numpy_version is None:
        import numpy

        env.numpy_version = numpy.__version__
    nv = env.numpy_version
    if version_tuple(nv)[:1] == (NUMPY_MAJOR,):
        rep.add("numpy", OK, f"NumPy {nv}", out)
    else:
        rep.add("numpy", FAIL, f"NumPy {nv}, expected 1.x: PYNQ {want}'s compiled parts "
                               f"need NumPy 1 (pip install 'numpy<2' in the PYNQ "
                               f"environment, Kria-PYNQ issue 46)", out)


def check_files(bit: Path | None, rep: Report, out=None) -> dict | None:
    """The .bit, the .hwh beside it and the manifest JSON; the manifest (or None)."""
    if bit is None:
        rep.add("files", FAIL, "no bitstream: give --bitstream or set TELLME_BITSTREAM", out)
        return None
    missing = [p.name for p in (bit, bit.with_suffix(".hwh"), bit.with_suffix(".json"))
               if not p.is_file()]
    if missing:
        rep.add("files", FAIL, f"missing beside {bit.parent}: {', '.join(missing)} (PYNQ "
                               f"needs the .bit and .hwh of one name; the manifest is the "
                               f".json the build writes, bitstreams/<target>/)", out)
        return None
    try:
        man = json.loads(bit.with_suffix(".json").read_text())
    except ValueError as e:
        rep.add("files", FAIL, f"{bit.with_suffix('.json').name} is not JSON: {e}", out)
        return None
    named = man.get("files", {})
    if named and (named.get("bit"), named.get("hwh")) != (bit.name, bit.with_suffix(".hwh")
                                                         .name):
        rep.add("files", FAIL, f"the manifest names {named.get('bit')}/{named.get('hwh')}, "
                               f"not {bit.name}: a renamed bitstream (PYNQ may use a stale "
                               f".hwh)", out)
        return None
    rep.add("files", OK, f"{bit.name}, .hwh, .json (target {man.get('target')}, build "
                         f"{man.get('build_hash')})", out)
    return man


def manifest_tiling(man: dict):
    from tellme.spec.targets import target as get_target
    from tellme.spec.tiling import Tiling

    t = man.get("tiling")
    if t:
        return Tiling(int(t["t"]), int(t["q"]))
    return get_target(man["target"]).tiling


def check_manifest(man: dict, wf, rep: Report, out=None) -> bool:
    """Manifest against this host's register words and the weight file's target/tiling."""
    from tellme.spec.registers import const_words
    from tellme.spec.targets import TARGET_NAMES

    tname = man.get("target")
    if tname not in TARGET_NAMES:
        rep.add("manifest", FAIL, f"target {tname!r} unknown to this host "
                                  f"({', '.join(TARGET_NAMES)})", out)
        return False
    try:
        h = int(str(man["build_hash"]), 16)
    except (KeyError, ValueError):
        rep.add("manifest", FAIL, f"no build_hash in the manifest ({man.get('build_hash')!r})",
                out)
        return False
    words = const_words(tname, h)
    bad = [f"{k} {v} (host {words[k]:#010x})" for k, v in man.get("registers", {}).items()
           if k in words and int(v, 16) != words[k]]
    if bad:
        rep.add("manifest", FAIL, "register words differ from this host's spec: "
                + ", ".join(bad) + ": install the host package of this build", out)
        return False
    tl = manifest_tiling(man)
    if wf is None:
        rep.add("manifest", OK, f"{tname} T={tl.t} Q={tl.q}, registers match this host", out)
        return True
    ft = wf.meta.get("target")
    src = f" (converted for {ft})" if ft else ""
    if wf.tiling != tl:
        rep.add("manifest", FAIL, f"the weight file is laid out for T={wf.tiling.t} "
                                  f"Q={wf.tiling.q}{src}, the bitstream is a {tname} build "
                                  f"with T={tl.t} Q={tl.q}: convert with --target {tname}", out)
        return False
    if ft and ft != tname:
        rep.add("manifest", WARN, f"weight file converted for {ft}, bitstream {tname} (same "
                                  f"tiling T={tl.t} Q={tl.q})", out)
        return True
    rep.add("manifest", OK, f"{tname} T={tl.t} Q={tl.q} = the weight file's{src}", out)
    return True


def session_bytes(wf, nbytes: int, target: str, max_context: int | None) -> int:
    """Contiguous bytes the driver allocates for this weight file (its default call sizes and
    output: logits through the PL LM head when the target's build has one for this hidden
    size, as ``driver.pl_head_fits`` decides on the device)."""
    from tellme.spec.lm_head import fits
    from tellme.spec.memory_map import memory_map
    from tellme.spec.targets import target as get_target

    from .driver import session_sizes

    tgt = get_target(target)
    c = wf.config
    pl = fits(c.hidden_size, tgt.lm_head.get("lanes", 0), tgt.lm_head.get("max_d", 0))
    output = "logits" if pl else "hidden"
    ctx = c.max_context if max_context is None else int(max_context)
    mt, rows = session_sizes(tgt, ctx, output=output)
    return memory_map(c, tgt, ctx, weights_nbytes=nbytes, max_tokens=mt, out_rows=rows,
                      output=output, budget=None).total_bytes


def check_cma(env: BoardEnv, need: int | None, what: str, rep: Report, out=None) -> None:
    try:
        info = read_meminfo(env.meminfo)
    except OSError as e:
        rep.add("cma", FAIL, f"cannot read {env.meminfo}: {e}", out)
        return
    if "CmaTotal" not in info:
        rep.add("cma", FAIL, f"no CmaTotal in {env.meminfo}: a kernel without CMA "
                             f"(cma=... on the kernel command line)", out)
        return
    free, total = info.get("CmaFree", 0), info["CmaTotal"]
    have = f"CmaFree {_mib(free)} of CmaTotal {_mib(total)}"
    if need is None:
        rep.add("cma", OK, have, out)
    elif need > free:
        hint = (" (free it: another process holds CMA buffers)" if need <= total else
                " (raise cma= in the bootargs or use a smaller --max-context)")
        rep.add("cma", FAIL, f"{what} needs {_mib(need)}, {have}{hint}", out)
    else:
        rep.add("cma", OK, f"{what} needs {_mib(need)}, {have}", out)


def check_device(env: BoardEnv, bit: Path, man: dict, wf, rep: Report, out=None) -> None:
    """Load the overlay and compare the identity registers with the manifest and the file."""
    from tellme.spec.registers import REGS

    from .device import DeviceError
    from .driver import DriverError, check_identity
    from .pynq_device import PynqDevice

    try:
        dev = PynqDevice(bit, pynq=env.module(), check=False, interrupt=False)
    except DeviceError as e:
        rep.add("load", FAIL, str(e), out)
        return
    try:
        rep.add("load", OK, f"{bit.name} loaded", out)
        words = man.get("registers", {})
        for name in ("ID", "VERSION", "BUILD_HASH") + tuple(
                n for n in words if n.startswith("CAP_")):
            got = dev.read32(REGS[name].offset)
            want = words.get(name)
            if want is None:
                rep.add(name, WARN, f"{got:#010x} (not in the manifest)", out)
            elif got != int(want, 16):
                rep.add(name, FAIL, f"{got:#010x}, the manifest says {want}: the loaded design "
                                    f"is not this build (stale .hwh, or another bitstream)", out)
            else:
                rep.add(name, OK, f"{got:#010x} = manifest", out)
        if wf is not None:
            try:
                tname, fmt = check_identity(dev, wf.tiling, wf.meta.get("target"))
            except DriverError as e:
                rep.add("identity", FAIL, str(e), out)
            else:
                rep.add("identity", OK, f"{tname} build, {fmt.name} streams, formats and "
                                        f"tiling match the host and the weight file", out)
    finally:
        dev.close()


def default_bitstream() -> Path | None:
    b = os.environ.get("TELLME_BITSTREAM")
    return Path(b) if b else None


def run_check(bitstream=None, model=None, max_context: int | None = None,
              env: BoardEnv | None = None, out=None) -> Report:
    """All the checks, printed to ``out`` as they run; the :class:`Report`."""
    from tellme.quant.format import read_weight_file

    from .generate import DEFAULT_MODEL

    env = env or BoardEnv()
    out = out or sys.stdout
    rep = Report()
    check_versions(env, rep, out)
    bit = Path(bitstream) if bitstream else default_bitstream()
    man = check_files(bit, rep, out)
    path = Path(model) if model else DEFAULT_MODEL
    wf = None
    try:
        wf = read_weight_file(path, verify=False)
        rep.add("model", OK, f"{path.name}: {path.stat().st_size:,} bytes, T={wf.tiling.t} "
                             f"Q={wf.tiling.q}, target {wf.meta.get('target', '?')}, "
                             f"context {wf.config.max_context}", out)
    except (OSError, ValueError) as e:
        rep.add("model", FAIL, f"{path}: {e}", out)
    need, what = None, "the session"
    target = (man or {}).get("target") or (wf.meta.get("target") if wf else None)
    if wf is not None and target:
        from tellme.spec.memory_map import MemoryMapError

        ctx = wf.config.max_context if max_context is None else max_context
        what = f"{path.name} at context {ctx} on {target}"
        try:
            need = session_bytes(wf, path.stat().st_size, target, ctx)
        except (MemoryMapError, ValueError) as e:
            rep.add("fits", FAIL, str(e), out)
    check_cma(env, need, what, rep, out)
    if man is not None and check_manifest(man, wf, rep, out):
        check_device(env, bit, man, wf, rep, out)
    elif man is not None or bit is not None:
        rep.add("load", FAIL, "not attempted (the checks above failed)", out)
    print(rep.summary(), file=out)
    return rep


# --------------------------------------------------------------------------- reset

def run_reset(bitstream=None, pynq=None, reload: bool = False, out=None) -> int:
    """Attach to the loaded design (download it when the PL holds another one, or with
    ``reload``), print the registers, soft-reset, print them again. 0 when idle after."""
    from .device import DUMP_REGISTERS, register_dump
    from .pynq_device import PynqDevice

    out = out or sys.stdout
    bit = Path(bitstream) if bitstream else default_bitstream()
    if bit is None:
        raise BoardError("no bitstream: give --bitstream or set TELLME_BITSTREAM")
    if pynq is None:
        from .pynq_device import _pynq

        pynq = _pynq()
    dev = PynqDevice(bit, pynq=pynq, download=reload, check=False, interrupt=False)
    try:
        how = "downloaded" if dev.downloaded else "attached to the loaded design"
        print(f"{bit.name}: {how}; registers before the reset:", file=out)
        print(register_dump(dev, DUMP_REGISTERS), file=out)
        dev.soft_reset()
        st = dev.fields("STATUS")
        print("after CMD.SOFT_RESET:", file=out)
        print(register_dump(dev, DUMP_REGISTERS), file=out)
        if st["BUSY"]:
            print("still BUSY: reload the bitstream (tellme board reset --reload)", file=out)
            return 2
        print("idle", file=out)
        return 0
    finally:
        dev.close()


# --------------------------------------------------------------------------- deploy

SSH_OPTS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")


@dataclass
class DeployPlan:
    local: list                # commands run here (the wheel build)
    remote: list               # ssh/scp commands
    wheel: Path
    target: str = ""           # [user@]host

    def lines(self) -> list:
        return [shlex.join(c) for c in self.local + self.remote]


def wheel_name() -> str:
    from tellme import __version__

    return f"tellme-{__version__}-py3-none-any.whl"


def board_command(cmd: list, sudo: bool = True) -> str:
    """The remote shell command that runs ``cmd`` on the board in the PYNQ environment:
    ``[sudo -n] bash -c '<source the profile scripts>; exec <cmd>'`` (PYNQ needs root and
    XILINX_XRT)."""
    prelude = "; ".join(f"if [ -f {f} ]; then . {f}; fi" for f in BOARD_PROFILE)
    inner = f"{prelude}; exec {shlex.join(cmd)}"
    return shlex.join((["sudo", "-n"] if sudo else []) + ["bash", "-c", inner])


def check_host(host: str | None, user: str | None = None) -> str:
    """``[user@]host`` for ssh, from ``host`` or $TELLME_BOARD; BoardError (one line) when
    there is none or it is not an address (empty, whitespace, '/', a leading '-' that ssh
    would read as an option)."""
    host = host or os.environ.get(BOARD_ENV_VAR, "")
    if not host.strip():
        raise BoardError(f"no board to deploy to: give its ssh address (tellme board deploy "
                         f"HOST ...) or set {BOARD_ENV_VAR}")
    for what, v in (("host", host), ("user", user or "")):
        if v.startswith("-") or any(ch.isspace() for ch in v) or "/" in v or (
                what == "user" and ("@" in v or ":" in v)):
            raise BoardError(f"{what} {v!r} is not an ssh {what} name")
    if user and "@" in host:
        raise BoardError(f"give the user once: --user {user} or {host}")
    return f"{user}@{host}" if user else host


def _scp_target(at: str) -> str:
    """scp's ``[user@]host`` (an IPv6 address in brackets, or scp reads its ':' as the path)."""
    user, sep, host = at.rpartition("@")
    return f"{user}{sep}[{host}]" if ":" in host and not host.startswith("[") else at


def plan_deploy(host: str | None, bitstream, model, user: str | None = None,
                dest: str = "tellme", python: str = BOARD_PYTHON, sudo: bool = True,
                max_context: int | None = None, root: Path | None = None) -> DeployPlan:
    """The commands that build the wheel, copy everything and run ``check`` on ``host``
    (None: $TELLME_BOARD)."""
    at = check_host(host, user)
    bit, model = Path(bitstream), Path(model)
    for p in (bit, bit.with_suffix(".hwh"), bit.with_suffix(".json"), model):
        if not p.is_file():
            raise BoardError(f"{p}: no such file (deploy copies the .bit, the .hwh and the "
                             f".json manifest beside it, and the weight file)")
    root = root or Path(__file__).resolve().parent.parent
    wheel_dir = root / "build" / "board"
    wheel = wheel_dir / wheel_name()
    local = [[sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "-w", str(wheel_dir), str(root)]]
    rb, rm = f"{dest}/bitstreams", f"{dest}/models"
    sat = _scp_target(at)
    files = [str(bit), str(bit.with_suffix(".hwh")), str(bit.with_suffix(".json"))]
    extra = [str(p) for p in (model.parent / "tokenizer.json",) if p.is_file()]
    install = [python, "-m", "pip", "install", "--no-deps", "--force-reinstall",
               f"{dest}/{wheel.name}"]
    check = [python, "-m", "tellme.cli", "board", "check", "--bitstream",
             f"{rb}/{bit.name}", "--model", f"{rm}/{model.name}"]
    if max_context is not None:
        check += ["--max-context", str(max_context)]
    remote = [
        ["ssh", *SSH_OPTS, at, shlex.join(["mkdir", "-p", rb, rm])],
        ["scp", *SSH_OPTS, *files, f"{sat}:{rb}/"],
        ["scp", *SSH_OPTS, str(model), *extra, f"{sat}:{rm}/"],
        ["scp", *SSH_OPTS, str(wheel), f"{sat}:{dest}/"],
        ["ssh", *SSH_OPTS, at, board_command(install, sudo)],
        ["ssh", *SSH_OPTS, at, board_command(check, sudo)],
    ]
    return DeployPlan(local, remote, wheel, at)


def run_deploy(plan: DeployPlan, dry_run: bool = False, which=shutil.which,
               run=subprocess.run, out=None) -> int:
    """Print (``dry_run``) or run the plan's commands in order; BoardError naming the step
    that failed. The last command's status (the board-side check) is returned."""
    out = out or sys.stdout
    if dry_run:
        for line in plan.lines():
            print(line, file=out)
        return 0
    missing = [t for t in ("ssh", "scp") if which(t) is None]
    if missing:
        raise BoardError(f"{' and '.join(missing)} not found on PATH: deploy copies over "
                         f"OpenSSH (apt install openssh-client), or copy the files by hand "
                         f"(docs/board.md)")
    rc = 0
    for i, cmd in enumerate(plan.local + plan.remote):
        print("+ " + shlex.join(cmd), file=out, flush=True)
        last = i == len(plan.local) + len(plan.remote) - 1
        try:
            res = run(cmd, check=False)
        except OSError as e:
            raise BoardError(f"{cmd[0]} failed to start: {e}") from None
        rc = res.returncode
        if rc == 255 and cmd[0] in ("ssh", "scp"):
            raise BoardError(f"cannot reach the board ({cmd[0]} exit 255, {plan.target}): "
                             f"check the address, that sshd runs, and that key login works "
                             f"(BatchMode: no password prompts; ssh-copy-id)")
        if rc and not last:
            raise BoardError(f"step failed (exit {rc}): {shlex.join(cmd)}")
        if i == len(plan.local) - 1 and not plan.wheel.is_file():
            raise BoardError(f"the wheel build wrote no {plan.wheel}")
    return rc


__all__ = ["BoardEnv", "BoardError", "Check", "Report", "run_check", "run_reset",
           "plan_deploy", "run_deploy", "DeployPlan", "board_command", "check_host",
           "read_meminfo", "session_bytes", "OK", "WARN", "FAIL"]
