"""``tellme study ...``: the studies behind the design decisions (see tellme.cli).

Each study module has ``main(argv) -> int`` with its own argparse; this group forwards the
remaining arguments to it (tellme.cli passes unparsed arguments on as ``args.rest``), so
``tellme study NAME --help`` shows the study's options.
"""

from __future__ import annotations

import importlib

# name: (module, one-line help)
STUDIES = {
    "accuracy": ("tellme.studies.accuracy",
                 "hw vs float numerics: top-1 agreement, perplexity, KL, ranges; stream-format "
                 "variants (--variants)"),
    "online-softmax": ("tellme.studies.online_softmax",
                       "a one-pass (online-softmax) attention against the two-pass contract"),
    "golden-speed": ("tellme.studies.golden_speed",
                     "golden-model prefill and decode tokens/s in both numerics"),
    "sizes": ("tellme.studies.sizes",
              "weight-file sizes of the public checkpoints for a target's tiling"),
    "kv-traffic": ("tellme.studies.kv_traffic",
                   "KV-cache DDR bytes per token and layer; attention engine time against it"),
    "kv-bursts": ("tellme.studies.kv_bursts",
                  "KVReader bursts and bytes per engine call"),
    "attn-int-rates": ("tellme.studies.attn_int_rates",
                       "integer attention engine cycles against the KV-DDR and TLMM budgets"),
    "kv-int8": ("tellme.studies.kv_int8",
                "accuracy of an int8 KV cache against stream-format KV (hw numerics)"),
}


def register(sub) -> None:
    p = sub.add_parser("study", help="studies behind the design decisions (accuracy, traffic)")
    ssub = p.add_subparsers(dest="study", metavar="STUDY")
    ssub.required = True
    for name, (module, text) in STUDIES.items():
        s = ssub.add_parser(name, help=text, add_help=False)
        s.set_defaults(func=_run, study_module=module, study_name=name, forward=True)


def _run(args) -> int:
    return int(importlib.import_module(args.study_module).main(args.rest) or 0)
