"""The same bits on every x86-64 CPU with AVX2 and FMA, Intel or AMD, with or without AVX-512: each CPU library the
training step goes through, pinned to one code path, and a fixed thread count.

The libraries pick their code by the CPU they find, and the picks sum in different orders (bench/RESULTS.md, "The
same numbers on every machine", measured one at a time on a few training steps of the main job's model):

- torch's own vectorised kernels (reductions, elementwise, AdamW): AVX-512 or AVX2 ones. ``ATEN_CPU_CAPABILITY=avx2``.
- MKL's matrix products (every Linear, forward and backward): per-CPU branches; its reproducibility mode pins one.
  ``MKL_CBWR=COMPATIBLE`` is the branch MKL documents as the same on Intel and non-Intel CPUs (its AVX2 branch is
  documented for Intel CPUs only; on others MKL uses its automatic choice).
- oneDNN's convolution (the patch embedding): JIT code for the instruction set it finds. ``ONEDNN_MAX_CPU_ISA=AVX2``
  (2.4-2.8x faster than turning oneDNN off, which takes the conv through MKL's slower pinned branch).
- Thread counts change how torch and MKL split their sums: THREADS for one model, one each for two models trained
  side by side (recipes/train.py), whatever the machine has.
- numba's kernels need no pin: compiled for AVX-512, for AVX2 (generic, Haswell or Zen 3 tuning) they compute the same
  bits (every sum in a fixed order, no approximate reciprocals).
- The video decoders and the encoder that renders the generated clips gave the same bytes on an emulated AMD CPU.

The environment must be set before torch is imported: ``apply_before_torch(argv)`` at the top of recipes/train.py
(``describe`` says what is in effect). Costs on the project's Intel machine: bench/RESULTS.md.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}
THREADS = 2
MODES = ("auto", "portable", "native")
DATA_FLAGS = ("--manifest", "--dataset_name")  # data of one's own: not the main job's generated data


def requested_mode(argv: list[str]) -> str:
    """'portable' or 'native' from recipes/train.py's flags: --cpu_numerics (last one wins; YAML configs' key too),
    where 'auto' (the default) is portable on the generated data (the main job) and native on data of one's own
    (--manifest, --dataset_name)."""
    import yaml

    options = {}
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config":
            options.update(yaml.safe_load(Path(argv[i + 1]).read_text()) or {})
    for i, arg in enumerate(argv):
        if arg.startswith("--cpu_numerics="):
            options["cpu_numerics"] = arg.split("=", 1)[1]
        elif arg == "--cpu_numerics" and i + 1 < len(argv):
            options["cpu_numerics"] = argv[i + 1]
        elif arg.split("=", 1)[0] in DATA_FLAGS:
            options["manifest"] = True
    mode = options.get("cpu_numerics", "auto")
    if mode not in MODES:
        raise SystemExit(f"--cpu_numerics must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "auto":
        return "native" if any(options.get(key) for key in ("manifest", "dataset_name")) else "portable"
    return mode


def apply_before_torch(argv: list[str]) -> str:
    """Set the portable environment if the flags ask for it (values the user set win); returns the mode."""
    import sys

    mode = requested_mode(argv)
    if mode == "portable":
        if "torch" in sys.modules:
            raise RuntimeError("portable CPU numerics must be set before torch is imported")
        for name, value in ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    return mode


def describe(mode: str) -> str:
    """One line for the log: which numerics this process computes with (the caller sets the thread count)."""
    import torch

    if mode != "portable":
        return f"native ({torch.backends.cpu.get_cpu_capability()} kernels, the machine's own library code paths)"
    capability = torch.backends.cpu.get_cpu_capability()
    description = (f"portable (torch {capability} kernels, MKL branch {os.environ.get('MKL_CBWR')}, oneDNN up to "
                   f"{os.environ.get('ONEDNN_MAX_CPU_ISA')}, a fixed thread count): the same bits on any x86-64 CPU "
                   "with AVX2 and FMA")
    if capability != "AVX2" or any(os.environ.get(name) != value for name, value in ENVIRONMENT.items()):
        description += ("; not in effect here (set before torch is imported, and a CPU with AVX2): the numbers may "
                        "differ from other machines'")
    return description
