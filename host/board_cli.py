"""Subcommands ``tellme board check|reset|deploy`` (host/board.py, docs/board.md).

Light imports only: the commands run on the board image (NumPy, pynq).
"""

from __future__ import annotations


def register(sub) -> None:
    from tellme.cli import group

    g = group(sub, "board", "on a KV260/ZCU104: check the setup, reset the accelerator, "
                            "deploy to a board over ssh")
    c = g.add_parser("check", help="check PYNQ/Python/NumPy, CMA, bitstream, manifest and "
                                   "weight file, then load the overlay and read the ID",
                     description="One line per check (ok / warn / FAIL and the numbers); "
                                 "exit 0 when none failed, 2 otherwise. Runs on the board, "
                                 "as root in the PYNQ environment.")
    c.add_argument("--bitstream", default=None,
                   help="the .bit (with .hwh and .json beside it; default $TELLME_BITSTREAM)")
    c.add_argument("--model", default=None,
                   help="weight file (default: the bundled demo model)")
    c.add_argument("--max-context", type=int, default=None,
                   help="context the CMA need is computed for (default: the model's)")
    c.add_argument("--meminfo", default=None,
                   help="the meminfo file CmaFree/CmaTotal are read from (default /proc/meminfo)")
    c.set_defaults(func=_check)

    r = g.add_parser("reset", help="soft-reset the accelerator and print the register dump",
                     description="Attach to the loaded design (download it if the PL holds "
                                 "another one), print the registers, CMD.SOFT_RESET, print "
                                 "them again. Exit 0 when the accelerator is idle after.")
    r.add_argument("--bitstream", default=None, help="the .bit (default $TELLME_BITSTREAM)")
    r.add_argument("--reload", action="store_true",
                   help="download the bitstream again (when a soft reset is not enough)")
    r.set_defaults(func=_reset)

    d = g.add_parser("deploy", help="copy bitstream, weight file and the host package to a "
                                    "board over ssh and run `board check` there",
                     description="Builds a wheel of this repository (pip wheel --no-deps into "
                                 "build/board/), copies it with the bitstream pair, manifest "
                                 "and weight file (and tokenizer.json beside it) to "
                                 "HOST:DEST, installs it with --no-deps into the PYNQ "
                                 "environment and runs `tellme board check` there (as root, "
                                 "with /etc/profile.d/pynq_venv.sh sourced). ssh/scp in "
                                 "BatchMode: key login needed; sudo -n: passwordless sudo "
                                 "or --user root.")
    d.add_argument("host", nargs="?", default=None,
                   help="the board's ssh address (default $TELLME_BOARD)")
    d.add_argument("--user", default=None, help="ssh user (default: ssh's)")
    d.add_argument("--dest", default="tellme",
                   help="folder on the board, relative to the home (default tellme)")
    d.add_argument("--bitstream", required=True, help="the .bit (.hwh and .json beside it)")
    d.add_argument("--model", required=True, help="weight file")
    d.add_argument("--max-context", type=int, default=None)
    d.add_argument("--python", default=None,
                   help="Python on the board (default: the PYNQ venv's, "
                        "/usr/local/share/pynq-venv/bin/python)")
    d.add_argument("--no-sudo", action="store_true",
                   help="run pip and check without sudo -n (e.g. --user root)")
    d.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    d.set_defaults(func=_deploy)


def _check(args) -> int:
    from tellme.cli import CliError

    from .board import MEMINFO, BoardEnv, run_check

    rep = run_check(args.bitstream, args.model, args.max_context,
                    BoardEnv(meminfo=args.meminfo or MEMINFO))
    if rep.failed:
        raise CliError(rep.summary())
    return 0


def _reset(args) -> int:
    from tellme.cli import CliError

    from .board import BoardError, run_reset
    from .device import DeviceError

    try:
        return run_reset(args.bitstream, reload=args.reload)
    except (BoardError, DeviceError) as e:
        raise CliError(str(e)) from e


def _deploy(args) -> int:
    from tellme.cli import CliError

    from .board import BOARD_PYTHON, BoardError, plan_deploy, run_deploy

    try:
        plan = plan_deploy(args.host, args.bitstream, args.model, user=args.user,
                           dest=args.dest, python=args.python or BOARD_PYTHON,
                           sudo=not args.no_sudo, max_context=args.max_context)
        rc = run_deploy(plan, dry_run=args.dry_run)
    except BoardError as e:
        raise CliError(str(e)) from e
    if rc:
        raise CliError(f"the board-side check failed (exit {rc}); its lines are above")
    return 0
