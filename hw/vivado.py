"""The Vivado flow of ``tellme hw bitstream``: the Verilog wrapper, the IP-packaging, block-design
and build Tcl, the constraints, running Vivado in batch mode and the manifest.

Everything is generated from ``tellme.spec.shell`` (ports, PS ports, addresses, boards),
``tellme.spec.targets`` (clock, tiling) and ``tellme.spec.registers`` (control window): no width,
address or part string is kept by hand in a Tcl file. Layout:

* ``build/vivado/<target>/``: ``top.v`` (the Amaranth top), ``tellme_accel.v`` (wrapper),
  ``package_ip.tcl``, ``block_design.tcl``, ``build.tcl``, ``tellme_<target>.xdc``, Vivado's
  projects, logs and checkpoints, ``out/`` (the bitstream and .hwh as Vivado writes them),
  ``reports/``;
* ``bitstreams/<target>/`` (git-ignored, only written after a build passed timing):
  ``<stem>.bit`` / ``.hwh``, ``<stem>.json`` (manifest) and ``<stem>.<report>.rpt``, with
  ``<stem>`` = ``tellme_<target>_<build hash>_<source hash>`` (:func:`build_stem`): the
  BUILD_HASH register's value, then a hash of everything Vivado is given (top, wrapper, Tcl,
  constraints). Unique per build input, so a bitstream is never named like another one with
  a different .hwh (PYNQ 3.0 may reuse a stale .hwh of a same-named bitstream), even when
  only the block design changed (a PS port, the clock) and the Verilog did not.

The accelerator top is expected as ``tellme.hw.top.make_top(target, build_hash=0)`` returning an
Amaranth component whose ports match ``spec.shell.top_ports()`` (module ``spec.shell.TOP_MODULE``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tellme.spec import shell
from tellme.spec.registers import ADDR_WIDTH, const_words
from tellme.spec.targets import target as get_target

from .toolchain import REPO_ROOT, ToolMissing

VIVADO_HINT = ("install it with the Xilinx Unified Installer {v} for Linux (Vivado archive at "
               "xilinx.com/support/download) and `source <install dir>/Vivado/{v}/settings64.sh`"
               " so that vivado is on PATH")


class FlowError(RuntimeError):
    """The Vivado flow stopped; the message says where and why."""


#: a pin's accelerator block: the first level under the top inside the packaged IP (BD cell
#: ``tellme_0``, the IP's wrapper instance ``inst``, the wrapper's instance ``top`` of the
#: Amaranth top); the same expression in Python (:func:`path_block`) and in build.tcl
_BLOCK_RE = rf"{shell.IP_INSTANCE}/(?:inst/)?(?:top/)?([^/]+)"
#: what report_timing_summary says when every constraint (setup, hold, pulse width) is met
TIMING_MET = "All user specified timing constraints are met."


# --------------------------------------------------------------------------- tools


def check_vivado(which=shutil.which, run=subprocess.run) -> tuple[str, str]:
    """(path, version) of the ``vivado`` on PATH; ToolMissing (one line) if it is absent or not
    the pinned version. Writes nothing."""
    want = shell.VIVADO_VERSION
    exe = which("vivado")
    if exe is None:
        raise ToolMissing(f"vivado not found on PATH: `tellme hw bitstream` needs Vivado {want} "
                          f"(the version Kria-PYNQ / PYNQ {shell.PYNQ_VERSION} is built with); "
                          + VIVADO_HINT.format(v=want))
    try:
        out = run([exe, "-version"], capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolMissing(f"`vivado -version` failed ({e}); " + VIVADO_HINT.format(v=want)) \
            from None
    m = re.search(r"Vivado v(\d{4}\.\d)", out)     # v2022.1 or v2022.1.2 (an update)
    got = m.group(1) if m else "unknown"
    if got != want:
        raise ToolMissing(f"vivado on PATH ({exe}) is {got}, the flow is pinned to Vivado {want} "
                          f"(Kria-PYNQ / PYNQ {shell.PYNQ_VERSION} boot firmware and .hwh "
                          "parser); " + VIVADO_HINT.format(v=want))
    return exe, got


def bitstream_dir(target: str) -> Path:
    """``bitstreams/<target>/`` (``TELLME_BITSTREAM_DIR`` moves the root); not created."""
    root = Path(os.environ.get("TELLME_BITSTREAM_DIR", REPO_ROOT / "bitstreams"))
    return root / target


def build_root(target: str) -> Path:
    """``build/vivado/<target>/`` (``TELLME_BUILD_DIR`` moves ``build/``); not created."""
    root = Path(os.environ.get("TELLME_BUILD_DIR", REPO_ROOT / "build"))
    return root / "vivado" / target


# --------------------------------------------------------------------------- Verilog


_PORT = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?(\\\S+|[A-Za-z_][\w$]*)\s*[;,)]?",
                   re.M)


def verilog_ports(text: str, module: str) -> dict:
    """{port: (width, "in" | "out")} of ``module`` in Verilog ``text`` (declarations one per
    line, as Amaranth and the generated wrapper write them)."""
    m = re.search(rf"^\s*module\s+\\?{re.escape(module)}\b(.*?)^\s*endmodule", text, re.M | re.S)
    if m is None:
        raise ValueError(f"module {module} not found")
    ports = {}
    for d, hi, lo, name in _PORT.findall(m.group(1)):
        width = abs(int(hi) - int(lo)) + 1 if hi else 1
        ports[name.lstrip("\\")] = (width, {"input": "in", "output": "out"}.get(d, d))
    return ports


def wrapper_verilog(names: dict | None = None) -> str:
    """The packaged wrapper ``tellme_accel``: Vivado's port names and interface attributes
    around the Amaranth top. ``names``: {contract name: the top's actual port} (default: the
    flat names)."""
    names = names or {k: k for k in shell.top_ports()}
    busifs = ":".join(i.name for i in shell.INTERFACES)
    lines = [f"// Generated by tellme.hw.vivado from spec/shell.py (shell v{shell.SHELL_VERSION})."
             " Do not edit.", "`default_nettype none", f"module {shell.WRAPPER} ("]
    decl = []
    clk, rst, irq = shell.CLOCK, shell.RESET, shell.INTERRUPT
    decl.append([f'(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 {clk.name} CLK" *)',
                 f'(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF {busifs}, '
                 f'ASSOCIATED_RESET {rst.name}" *)', f"input  wire {clk.name}"])
    decl.append([f'(* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 {rst.name} RST" *)',
                 '(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_HIGH" *)',
                 f"input  wire {rst.name}"])
    decl.append([f'(* X_INTERFACE_INFO = "xilinx.com:signal:interrupt:1.0 {irq.name} '
                 'INTERRUPT" *)', '(* X_INTERFACE_PARAMETER = "SENSITIVITY LEVEL_HIGH" *)',
                 f"output wire {irq.name}"])
    for i in shell.INTERFACES:
        for k, (sig, w, d) in enumerate(i.signals()):
            attrs = [f'(* X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 {i.name} '
                     f'{sig.upper()}" *)']
            if k == 0:
                params = [f"PROTOCOL {i.protocol}", f"DATA_WIDTH {i.data_bits}",
                          f"ADDR_WIDTH {i.addr_bits}"]
                if i.protocol == "AXI4":
                    params += [f"ID_WIDTH {i.id_bits}", "MAX_BURST_LENGTH 256",
                               "READ_WRITE_MODE " + ("READ_ONLY" if i.channels == "r"
                                                     else "READ_WRITE")]
                attrs.append(f'(* X_INTERFACE_PARAMETER = "{", ".join(params)}" *)')
            rng = f"[{w - 1}:0] " if w > 1 else ""
            kw = "input  wire" if d == "in" else "output wire"
            decl.append(attrs + [f"{kw} {rng}{i.name}_{sig}"])
    for n, block in enumerate(decl):
        sep = "," if n < len(decl) - 1 else ""
        lines += ["    " + a for a in block[:-1]] + ["    " + block[-1] + sep]
    lines.append(");")
    conns = [f".{names[top]}({wp})" for wp, (_, _, top) in shell.wrapper_ports().items()]
    lines.append(f"    {shell.TOP_MODULE} top (")
    lines += [f"        {c}{',' if n < len(conns) - 1 else ''}" for n, c in enumerate(conns)]
    lines += ["    );", "endmodule", "`default_nettype wire", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- Tcl


def _tcl_range(nbytes: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    raise ValueError(f"range {nbytes} is not a multiple of 1K")


def default_stem(target: str, build_hash: int) -> str:
    """The file stem before the sources exist (``--tcl-only``): ``tellme_<target>_<hash>``."""
    return f"tellme_{target}_{build_hash:08x}"


def _header(target: str, build_hash: int, stem: str | None = None) -> str:
    tgt, b = get_target(target), shell.board(target)
    stem = default_stem(target, build_hash) if stem is None else stem
    return "\n".join([
        f"# Generated by tellme.hw.vivado for target {target} (spec/shell.py, spec/targets.py,",
        "# spec/registers.py). Do not edit: `tellme hw bitstream` writes it again.",
        f"set tellme_target {target}",
        f"set tellme_part {b.part}",
        f"set tellme_board_part {b.board_part}",
        f"set tellme_board_connections {{{b.board_connections}}}",
        f"set tellme_vivado_version {shell.VIVADO_VERSION}",
        f"set tellme_build_hash {build_hash:08x}",
        f"set tellme_stem {{{stem}}}",
        f"set tellme_clock_mhz {tgt.clock_mhz:g}",
        f"set tellme_freq_tolerance {shell.FREQ_TOLERANCE:g}",
        f"set tellme_bd {shell.BD_NAME}",
        f"set tellme_ip_vlnv {':'.join(shell.IP_VLNV)}",
        f"set tellme_wrapper {shell.WRAPPER}",
        "set tellme_here [file dirname [file normalize [info script]]]",
        ""])


def package_tcl(target: str, build_hash: int = 0, stem: str | None = None) -> str:
    """package_ip.tcl: the wrapper and the top as a Vivado IP in ``ip_repo/``, with its AXI
    interfaces, clock, reset and interrupt checked after inference."""
    vendor, library, name, version = shell.IP_VLNV
    busifs = ":".join(i.name for i in shell.INTERFACES)
    out = [_header(target, build_hash, stem),
           "# ---- package the accelerator as an IP (ipx::package_project)",
           "create_project -force tellme_ip_pkg [file join $tellme_here ip_pkg] "
           "-part $tellme_part",
           "add_files -norecurse [list [file join $tellme_here top.v] "
           f"[file join $tellme_here {shell.WRAPPER}.v]]",
           "set_property top $tellme_wrapper [current_fileset]",
           "update_compile_order -fileset sources_1",
           "ipx::package_project -root_dir [file join $tellme_here ip_repo] "
           f"-vendor {vendor} -library {library} -taxonomy /UserIP -import_files "
           "-set_current true",
           "set core [ipx::current_core]",
           f"set_property name {name} $core",
           f"set_property version {version} $core",
           "set_property display_name {tellme BitNet b1.58 accelerator} $core",
           "set_property supported_families {zynquplus Production} $core",
           "ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core",
           "ipx::infer_bus_interfaces xilinx.com:signal:clock_rtl:1.0 $core",
           "ipx::infer_bus_interfaces xilinx.com:signal:reset_rtl:1.0 $core",
           "ipx::infer_bus_interfaces xilinx.com:signal:interrupt_rtl:1.0 $core",
           "# every interface of spec/shell.py must have been inferred, in its mode and (AXI)",
           "# with its protocol: AXI4LITE for the registers, AXI4 for the masters",
           "foreach {busif mode protocol} {"]
    for i in shell.INTERFACES:
        out.append(f"    {i.name} {i.mode} {i.protocol}")
    for p, mode in ((shell.CLOCK, "slave"), (shell.RESET, "slave"), (shell.INTERRUPT, "master")):
        out.append(f"    {p.name} {mode} -")
    out += ["} {",
            "    set bi [ipx::get_bus_interfaces $busif -of_objects $core]",
            "    if {$bi eq \"\"} {error \"tellme: IP packaging: interface $busif was not "
            "inferred (check the wrapper's port names)\"}",
            "    if {[get_property INTERFACE_MODE $bi] ne $mode} {error \"tellme: IP packaging:"
            " $busif is [get_property INTERFACE_MODE $bi], expected $mode\"}",
            "    if {$protocol eq \"-\"} continue",
            "    set pp [ipx::get_bus_parameters PROTOCOL -of_objects $bi]",
            "    if {$pp eq \"\"} {set pp [ipx::add_bus_parameter PROTOCOL $bi]; "
            "set_property value $protocol $pp}",
            "    if {[get_property value $pp] ne $protocol} {error \"tellme: IP packaging: "
            "$busif was inferred as [get_property value $pp], expected $protocol\"}",
            "}",
            f"foreach busif [split {busifs} :] {{",
            f"    ipx::associate_bus_interfaces -busif $busif -clock {shell.CLOCK.name} $core",
            "}",
            f"ipx::associate_bus_interfaces -clock {shell.CLOCK.name} "
            f"-reset {shell.RESET.name} $core",
            f"set rst_bi [ipx::get_bus_interfaces {shell.RESET.name} -of_objects $core]",
            "set pol [ipx::get_bus_parameters POLARITY -of_objects $rst_bi]",
            "if {$pol eq \"\"} {set pol [ipx::add_bus_parameter POLARITY $rst_bi]}",
            "set_property value ACTIVE_HIGH $pol",
            f"set mm [ipx::get_memory_maps {shell.CONTROL.name} -of_objects $core]",
            "if {$mm eq \"\"} {error \"tellme: IP packaging: no memory map for "
            f"{shell.CONTROL.name}\"}}",
            "ipx::create_xgui_files $core",
            "ipx::update_checksums $core",
            "ipx::check_integrity $core",
            "ipx::save_core $core",
            "close_project",
            ""]
    return "\n".join(out)


def block_design_tcl(target: str, build_hash: int = 0, stem: str | None = None) -> str:
    """block_design.tcl: PS from the board preset at the top of the design, the HP/HPC ports at
    128 bits, control on HPM0_LPD, pl_clk0 at the target clock (checked), reset, interconnect,
    interrupt controller, constant board pins, addresses."""
    masters = [i for i in shell.INTERFACES if i.mode == "master"]
    ctrl = shell.CONTROL
    used = [shell.PS_PORTS[i.ps_port] for i in shell.INTERFACES]
    off = [p for p in shell.PS_PORTS.values() if p not in used]
    cfg = [f"CONFIG.{p.use_param} {{0}}" for p in off]
    for i in shell.INTERFACES:
        p = shell.PS_PORTS[i.ps_port]
        cfg += [f"CONFIG.{p.use_param} {{1}}", f"CONFIG.{p.width_param} {{{i.data_bits}}}"]
    cfg += ["CONFIG.PSU__USE__IRQ0 {1}", "CONFIG.PSU__FPGA_PL0_ENABLE {1}",
            "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {$tellme_clock_mhz}"]
    ip = shell.IP_INSTANCE
    out = [_header(target, build_hash, stem),
           "# ---- block design (the PS at its top level: PYNQ issue 1408)",
           "create_bd_design -dir [file join $tellme_here bd] $tellme_bd",
           "set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e "
           "zynq_ultra_ps_e_0]",
           "apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e "
           "-config {apply_board_preset \"1\"} $ps",
           "set_property -dict [subst {",
           *[f"    {c}" for c in cfg],
           "}] $ps",
           "# ---- the PL clock: integer dividers give what they give",
           "set act [get_property CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ $ps]",
           "set clock_error [expr {abs($act - $tellme_clock_mhz) / double($tellme_clock_mhz)}]",
           "if {$clock_error > $tellme_freq_tolerance} {",
           "    if {[info exists tellme_clock_fallback] && $tellme_clock_fallback "
           "&& $act < $tellme_clock_mhz} {",
           "        puts \"tellme: warning: pl_clk0 runs at $act MHz, not $tellme_clock_mhz "
           "(fallback accepted)\"",
           "    } else {",
           "        error \"tellme: pl_clk0: asked for $tellme_clock_mhz MHz, the PS dividers "
           "give $act MHz; choose a clock the IOPLL divides to or pass --clock-fallback\"",
           "    }",
           "}",
           "set fh [open [file join $tellme_here out clock.txt] w]; puts $fh $act; close $fh",
           "# ---- cells",
           f"set accel [create_bd_cell -type ip -vlnv $tellme_ip_vlnv {ip}]",
           "set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_pl0]",
           "set intc [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_intc axi_intc_0]",
           "set_property -dict [list CONFIG.C_IRQ_CONNECTION {1} CONFIG.C_IRQ_IS_LEVEL {0}] "
           "$intc",
           "set smc_ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smc_ctrl]",
           "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {2}] $smc_ctrl"]
    for i in masters:
        out += [f"set smc_{i.name} [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect "
                f"smc_{i.name}]",
                f"set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}}] "
                f"$smc_{i.name}"]
    clock_pins = [f"[get_bd_pins $ps/{p.clock_pin}]" for p in used]
    aclk = ["[get_bd_pins rst_pl0/slowest_sync_clk]", f"[get_bd_pins {ip}/{shell.CLOCK.name}]",
            "[get_bd_pins axi_intc_0/s_axi_aclk]", "[get_bd_pins smc_ctrl/aclk]"]
    aclk += [f"[get_bd_pins smc_{i.name}/aclk]" for i in masters]
    aresetn = ["[get_bd_pins axi_intc_0/s_axi_aresetn]", "[get_bd_pins smc_ctrl/aresetn]"]
    aresetn += [f"[get_bd_pins smc_{i.name}/aresetn]" for i in masters]
    out += ["# ---- clock and reset: one clock, synchronous active-high reset for the "
            "accelerator",
            "connect_bd_net [get_bd_pins $ps/pl_clk0] " + " ".join(aclk + clock_pins),
            "connect_bd_net [get_bd_pins $ps/pl_resetn0] [get_bd_pins rst_pl0/ext_reset_in]",
            f"connect_bd_net [get_bd_pins rst_pl0/peripheral_reset] "
            f"[get_bd_pins {ip}/{shell.RESET.name}]",
            "connect_bd_net [get_bd_pins rst_pl0/peripheral_aresetn] " + " ".join(aresetn),
            "# ---- control: HPM0_LPD -> smartconnect -> registers, interrupt controller",
            f"connect_bd_intf_net [get_bd_intf_pins $ps/{shell.PS_PORTS[ctrl.ps_port].pin}] "
            "[get_bd_intf_pins smc_ctrl/S00_AXI]",
            f"connect_bd_intf_net [get_bd_intf_pins smc_ctrl/M00_AXI] "
            f"[get_bd_intf_pins {ip}/{ctrl.name}]",
            "connect_bd_intf_net [get_bd_intf_pins smc_ctrl/M01_AXI] "
            "[get_bd_intf_pins axi_intc_0/s_axi]",
            f"connect_bd_net [get_bd_pins {ip}/{shell.INTERRUPT.name}] "
            "[get_bd_pins axi_intc_0/intr]",
            "connect_bd_net [get_bd_pins axi_intc_0/irq] [get_bd_pins $ps/pl_ps_irq0]",
            "# ---- masters: one smartconnect each (ID and address width adaptation)"]
    for i in masters:
        out += [f"connect_bd_intf_net [get_bd_intf_pins {ip}/{i.name}] "
                f"[get_bd_intf_pins smc_{i.name}/S00_AXI]",
                f"connect_bd_intf_net [get_bd_intf_pins smc_{i.name}/M00_AXI] "
                f"[get_bd_intf_pins $ps/{shell.PS_PORTS[i.ps_port].pin}]"]
    for port, _pin, _std, value in shell.board(target).pins:
        out += [f"# ---- board pin {port}: constant {value}",
                f"create_bd_port -dir O {port}",
                f"set c_{port} [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant "
                f"const_{port}]",
                f"set_property -dict [list CONFIG.CONST_WIDTH {{1}} CONFIG.CONST_VAL "
                f"{{{value}}}] $c_{port}",
                f"connect_bd_net [get_bd_pins const_{port}/dout] [get_bd_ports {port}]"]
    out += ["# ---- addresses: control window from spec/registers.py, masters see all of DDR",
            f"assign_bd_address -offset {shell.CONTROL_BASE:#010x} "
            f"-range {_tcl_range(1 << ADDR_WIDTH)} "
            "-target_address_space [get_bd_addr_spaces $ps/Data] "
            f"[get_bd_addr_segs {ip}/{ctrl.name}/*]",
            f"assign_bd_address -offset {shell.INTC_BASE:#010x} "
            f"-range {_tcl_range(shell.INTC_RANGE)} "
            "-target_address_space [get_bd_addr_spaces $ps/Data] "
            "[get_bd_addr_segs axi_intc_0/S_AXI/*]",
            "assign_bd_address",
            "validate_bd_design",
            "save_bd_design",
            ""]
    return "\n".join(out)


def xdc(target: str) -> str:
    """Constraints: the board pins the design drives (the clock comes from the PS, its
    constraint from the block design)."""
    lines = [f"# Generated by tellme.hw.vivado for {target} (spec/shell.py BOARDS). Do not edit."]
    for port, pin, std, _ in shell.board(target).pins:
        lines += [f"set_property PACKAGE_PIN {pin} [get_ports {port}]",
                  f"set_property IOSTANDARD {std} [get_ports {port}]"]
    return "\n".join(lines) + "\n"


def build_tcl(target: str, build_hash: int = 0, clock_fallback: bool = False,
              jobs: int = 4, stem: str | None = None) -> str:
    """build.tcl: version check, packaging, block design, synthesis, implementation, reports,
    the timing checks (setup and hold slack naming the worst path's blocks, then the timing
    summary's verdict) and the bitstream + .hwh under ``out/``; any error is also written to
    ``error.txt``."""
    bd = shell.BD_NAME
    body = [f"set_param general.maxThreads {jobs}",
            "# 2022.1 or an update of it (2022.1.x)",
            "if {[join [lrange [split [version -short] .] 0 1] .] ne $tellme_vivado_version} {",
            "    error \"tellme: Vivado $tellme_vivado_version is required (Kria-PYNQ / PYNQ "
            f"{shell.PYNQ_VERSION}), this is [version -short]\"",
            "}",
            "# the accelerator block a timing-path pin lies in (as hw/vivado.py path_block)",
            "proc tellme_block {pin} {",
            f"    if {{[regexp {{{_BLOCK_RE}}} $pin -> b]}} {{return $b}}",
            "    return $pin",
            "}",
            "file mkdir [file join $tellme_here out] [file join $tellme_here reports]",
            "source [file join $tellme_here package_ip.tcl]",
            "# ---- non-project flow, in memory",
            "create_project -in_memory -part $tellme_part",
            "set_property board_part $tellme_board_part [current_project]",
            "if {$tellme_board_connections ne \"\"} {",
            "    set_property board_connections $tellme_board_connections [current_project]",
            "}",
            "set_property ip_repo_paths [list [file join $tellme_here ip_repo]] "
            "[current_project]",
            "update_ip_catalog",
            "source [file join $tellme_here block_design.tcl]",
            f"set bd_file [get_files {bd}.bd]",
            "set_property synth_checkpoint_mode None $bd_file",
            "generate_target all $bd_file",
            "set hwh [lindex [glob -nocomplain -directory [file join $tellme_here bd] "
            f"-join * hw_handoff {bd}.hwh] 0]",
            "if {$hwh eq \"\"} {error \"tellme: generate_target wrote no .hwh\"}",
            "read_verilog [make_wrapper -files $bd_file -top]",
            f"read_xdc [file join $tellme_here tellme_{target}.xdc]",
            f"synth_design -top {bd}_wrapper -part $tellme_part",
            "report_utilization -file [file join $tellme_here reports utilization_synth.rpt]",
            "opt_design",
            "place_design",
            "phys_opt_design",
            "route_design",
            "write_checkpoint -force [file join $tellme_here routed.dcp]",
            "report_utilization -file [file join $tellme_here reports utilization.rpt]",
            "report_utilization -hierarchical -file [file join $tellme_here reports "
            "utilization_hier.rpt]",
            "set summary [report_timing_summary -max_paths 20 -return_string]",
            "set fh [open [file join $tellme_here reports timing_summary.rpt] w]",
            "puts $fh $summary",
            "close $fh",
            "# ---- timing: stop on negative setup or hold slack, naming the worst path and the",
            "# accelerator blocks it joins, or on any other violated constraint (pulse width)",
            "set setup [get_timing_paths -setup -max_paths 1 -nworst 1]",
            "set hold [get_timing_paths -hold -max_paths 1 -nworst 1]",
            "if {$setup eq \"\" || $hold eq \"\"} {error \"tellme: no timed paths (is the "
            "clock constrained?)\"}",
            "set wns [get_property SLACK $setup]",
            "set whs [get_property SLACK $hold]",
            "set fh [open [file join $tellme_here out timing.txt] w]",
            "puts $fh \"wns $wns\"",
            "puts $fh \"whs $whs\"",
            "puts $fh \"setup_start [get_property STARTPOINT_PIN $setup]\"",
            "puts $fh \"setup_end [get_property ENDPOINT_PIN $setup]\"",
            "puts $fh \"hold_start [get_property STARTPOINT_PIN $hold]\"",
            "puts $fh \"hold_end [get_property ENDPOINT_PIN $hold]\"",
            "close $fh",
            "foreach {kind key slack path} [list setup WNS $wns $setup hold WHS $whs $hold] {",
            "    if {$slack < 0} {",
            "        set a [get_property STARTPOINT_PIN $path]",
            "        set b [get_property ENDPOINT_PIN $path]",
            "        error \"tellme: timing failed ($kind): $key $slack ns on the path from "
            "[tellme_block $a] to [tellme_block $b] ($a -> $b)\"",
            "    }",
            "}",
            f"if {{[string first {{{TIMING_MET}}} $summary] < 0}} {{",
            "    error \"tellme: timing failed: the timing summary does not say "
            f"'{TIMING_MET}' (WNS $wns, WHS $whs: another check, e.g. pulse width, failed; "
            "see reports/timing_summary.rpt)\"",
            "}",
            "write_bitstream -force [file join $tellme_here out $tellme_stem.bit]",
            "file copy -force $hwh [file join $tellme_here out $tellme_stem.hwh]",
            "puts \"tellme: built $tellme_stem (WNS $wns ns)\""]
    # The body runs inside a catch at the global level: any error (ours or Vivado's) is
    # written to error.txt, which hw/vivado.py run() reports, then raised again.
    out = [_header(target, build_hash, stem),
           f"set tellme_clock_fallback {int(clock_fallback)}",
           "file delete -force [file join $tellme_here error.txt]",
           "if {[catch {",
           *["    " + line if line else line for line in body],
           "} tellme_msg]} {",
           "    set fh [open [file join $tellme_here error.txt] w]",
           "    puts $fh $tellme_msg",
           "    close $fh",
           "    error $tellme_msg",
           "}",
           ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- reports

_UTIL_ROWS = {"CLB LUTs": "LUT", "CLB Registers": "FF", "Block RAM Tile": "BRAM36",
              "URAM": "URAM", "DSPs": "DSP"}


def parse_utilization(text: str) -> dict:
    """{metric: {"used", "available"}} from a Vivado ``report_utilization`` text (the first
    row of each kind)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in _UTIL_ROWS and _UTIL_ROWS[cells[0]] not in out:
            try:
                used, avail = float(cells[1]), float(cells[4])
            except ValueError:
                continue
            out[_UTIL_ROWS[cells[0]]] = {"used": used, "available": avail}
    return out


def parse_timing(text: str) -> dict:
    """The ``key value`` lines of ``out/timing.txt``."""
    out = {}
    for line in text.splitlines():
        if " " in line:
            k, v = line.split(" ", 1)
            out[k] = v.strip()
    return out


_BLOCK = re.compile(_BLOCK_RE)


def path_block(pin: str) -> str:
    """The accelerator block a timing-path pin lies in (its first level under the top), or
    the pin itself outside the accelerator."""
    m = _BLOCK.search(pin)
    return m.group(1) if m else pin


def timing_failure(timing: dict) -> str | None:
    """A one-line message for a failed timing check, else None."""
    for kind, key in (("setup", "wns"), ("hold", "whs")):
        if key in timing and float(timing[key]) < 0:
            a, b = timing.get(f"{kind}_start", "?"), timing.get(f"{kind}_end", "?")
            return (f"timing failed ({kind}): {key.upper()} {timing[key]} ns on the path from "
                    f"{path_block(a)} to {path_block(b)} ({a} -> {b})")
    return None


def manifest(target: str, build_hash: int, vivado_version: str, clock_actual: float,
             utilization: dict, timing: dict, files: dict, *, stem: str | None = None,
             clock_fallback: bool = False, built: str | None = None) -> dict:
    """The manifest beside a bitstream: what was built, from what, and how it closed.
    ``build_hash`` is the BUILD_HASH register's value (``registers`` has every constant
    register word the loaded design must read back)."""
    tgt, b = get_target(target), shell.board(target)
    words = const_words(target, build_hash)
    return {
        "format": 1, "target": target, "board": tgt.board, "part": b.part,
        "board_part": b.board_part, "build_hash": f"{build_hash:#010x}",
        "stem": stem or default_stem(target, build_hash), "built": built,
        "files": files, "shell_version": shell.SHELL_VERSION,
        "tiling": {"name": target, "t": tgt.tiling.t, "q": tgt.tiling.q},
        "clock_mhz": {"target": tgt.clock_mhz, "actual": clock_actual,
                      # the lower frequency was accepted (--clock-fallback and needed)
                      "fallback": bool(clock_fallback) and abs(clock_actual - tgt.clock_mhz)
                      > shell.FREQ_TOLERANCE * tgt.clock_mhz},
        "resources": utilization,
        "wns_ns": float(timing["wns"]), "whs_ns": float(timing["whs"]),
        "vivado_version": vivado_version,
        "control_base": f"{shell.CONTROL_BASE:#x}", "intc_base": f"{shell.INTC_BASE:#x}",
        "ps_ports": {i.name: i.ps_port for i in shell.INTERFACES},
        "registers": {k: f"{v:#010x}" for k, v in words.items()},
    }


# --------------------------------------------------------------------------- the flow


@dataclass
class BuildResult:
    stem: str
    out_dir: Path
    manifest: dict


def load_top(target: str):
    """``make(build_hash)`` for the accelerator top; FlowError while hw/top.py does not exist."""
    import importlib

    try:
        top = importlib.import_module("tellme.hw.top")
    except ModuleNotFoundError as e:
        if e.name not in ("tellme.hw.top",):
            raise
        raise FlowError("the accelerator top is not built yet (hw/top.py, issue 12): there is "
                        "no design to package; nothing was written") from None
    return lambda h: top.make_top(target, build_hash=h)


def _sources(target: str, verilog: str, build_hash: int, stem: str, clock_fallback: bool,
             jobs: int) -> dict:
    """{file name: text} of everything Vivado is given for one build (the top's ports are
    checked against the shell contract first: ValueError listing the differences)."""
    names = shell.check_top_ports(verilog_ports(verilog, shell.TOP_MODULE))
    return {"top.v": verilog, f"{shell.WRAPPER}.v": wrapper_verilog(names),
            "package_ip.tcl": package_tcl(target, build_hash, stem),
            "block_design.tcl": block_design_tcl(target, build_hash, stem),
            "build.tcl": build_tcl(target, build_hash, clock_fallback, jobs, stem),
            f"tellme_{target}.xdc": xdc(target)}


def build_stem(target: str, verilog: str, build_hash: int, clock_fallback: bool = False) -> str:
    """``tellme_<target>_<BUILD_HASH>_<source hash>``: the source hash is the first 24 bits
    of the SHA-256 of every file Vivado is given (written with an empty stem and one thread,
    so the name does not depend on itself or on ``--jobs``). Same inputs, same name; any
    change to the top, the shell, the clock or the constraints, a new name."""
    files = _sources(target, verilog, build_hash, "", clock_fallback, 1)
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return f"{default_stem(target, build_hash)}_{h.hexdigest()[:6]}"


def write_sources(target: str, verilog: str, build_hash: int, dest: Path,
                  clock_fallback: bool = False, jobs: int = 4, stem: str | None = None) -> Path:
    """Write the top, wrapper, Tcl and constraints for one build into ``dest`` (``stem``:
    default :func:`build_stem`); the path of build.tcl."""
    stem = stem or build_stem(target, verilog, build_hash, clock_fallback)
    files = _sources(target, verilog, build_hash, stem, clock_fallback, jobs)
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dest / name).write_text(text)
    return dest / "build.tcl"


def _last_error(work: Path) -> str:
    """One line: the message build.tcl caught (error.txt), else the log's first ERROR."""
    err, log = work / "error.txt", work / "vivado.log"
    if err.is_file() and err.read_text().strip():
        line = err.read_text(errors="replace").strip().splitlines()[0]
        return line.removeprefix("tellme: ")
    if not log.exists():
        return "no log written"
    errs = [ln for ln in log.read_text(errors="replace").splitlines()
            if ln.startswith("ERROR:")]
    return errs[0] if errs else "see the log"


def run(target: str, clock_fallback: bool = False, jobs: int = 4, log=print) -> BuildResult:
    """The whole flow for ``target``: check Vivado, elaborate the top, write the sources, run
    Vivado, check timing, publish to ``bitstreams/<target>/``. ToolMissing / FlowError stop it;
    the first two checks write nothing."""
    from .regs import stamp

    shell.board(target)
    exe, version = check_vivado()
    make = load_top(target)
    verilog, build_hash = stamp(make, shell.TOP_MODULE)
    try:
        stem = build_stem(target, verilog, build_hash, clock_fallback)   # checks the ports
    except ValueError as e:
        raise FlowError(f"{e}\nnothing was written") from None
    work = build_root(target)
    if work.exists():
        shutil.rmtree(work)
    script = write_sources(target, verilog, build_hash, work, clock_fallback, jobs, stem)
    log(f"vivado {version}: building {stem} in {work} (log: vivado.log)")
    proc = subprocess.run([exe, "-mode", "batch", "-nojournal", "-log", "vivado.log",
                           "-source", script.name], cwd=work)
    timing = {}
    if (work / "out" / "timing.txt").exists():
        timing = parse_timing((work / "out" / "timing.txt").read_text())
    failed = timing_failure(timing)
    if failed:
        raise FlowError(f"{failed}; reports in {work / 'reports'}, nothing was published")
    if proc.returncode != 0:
        raise FlowError(f"vivado stopped: {_last_error(work)} (log: {work / 'vivado.log'}); "
                        "nothing was published")
    outputs = {"bit": work / "out" / f"{stem}.bit", "hwh": work / "out" / f"{stem}.hwh",
               "clock": work / "out" / "clock.txt"}
    reports = {r: work / "reports" / r
               for r in ("utilization.rpt", "utilization_hier.rpt", "timing_summary.rpt")}
    missing = [str(p.relative_to(work)) for p in (*outputs.values(), *reports.values())
               if not p.is_file()]
    if missing or "wns" not in timing or "whs" not in timing:
        missing += ["out/timing.txt"] if "wns" not in timing or "whs" not in timing else []
        raise FlowError(f"vivado ended without writing {', '.join(missing)} (log: "
                        f"{work / 'vivado.log'}); nothing was published")
    util = parse_utilization(reports["utilization.rpt"].read_text())
    clock = float(outputs["clock"].read_text().strip())
    dest = bitstream_dir(target)
    dest.mkdir(parents=True, exist_ok=True)
    files = {"bit": f"{stem}.bit", "hwh": f"{stem}.hwh"}
    for kind, name in files.items():
        shutil.copy2(outputs[kind], dest / name)
    for rpt, path in reports.items():
        shutil.copy2(path, dest / f"{stem}.{rpt}")
    built = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    man = manifest(target, build_hash, version, clock, util, timing, files, stem=stem,
                   clock_fallback=clock_fallback, built=built)
    (dest / f"{stem}.json").write_text(json.dumps(man, indent=2) + "\n")
    return BuildResult(stem, dest, man)


__all__ = ["FlowError", "BuildResult", "check_vivado", "bitstream_dir", "build_root",
           "verilog_ports", "wrapper_verilog", "package_tcl", "block_design_tcl", "xdc",
           "build_tcl", "parse_utilization", "parse_timing", "path_block", "timing_failure",
           "manifest", "load_top", "write_sources", "run", "build_stem", "default_stem",
           "TIMING_MET"]
