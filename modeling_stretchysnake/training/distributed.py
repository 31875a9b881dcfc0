"""FSDP on CPU processes through Accelerate's own FSDP machinery, and the end of a distributed run.

`accelerate launch` with an FSDP config starts the processes and describes the FSDP plugin in the environment
(ACCELERATE_USE_FSDP, FSDP_*), but Accelerate turns a distributed run into FSDP only on an accelerator device: on
CPU processes (gloo) the state stays MULTI_CPU and the model is silently wrapped in DDP. FSDP2 (`fully_shard`)
itself runs on CPU with gloo, so `use_fsdp_on_cpu` makes the state what AcceleratorState makes it on GPUs:
distributed type FSDP with the launcher's plugin. From there Accelerate's `prepare` shards the model
(`fsdp2_prepare_model`, one unit per layer class in the wrap policy) and the Trainer writes and resumes sharded
checkpoints exactly as it does on GPUs.
"""

from __future__ import annotations

import logging
import time

import torch

logger = logging.getLogger(__name__)

WORKER_DRAIN_SECONDS = 0.5  # ample for a gloo worker that waits only for the GIL


def fsdp_requested() -> bool:
    """Whether the launcher (or the user) asked for FSDP through the environment, as Accelerate reads it."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP")


def use_fsdp_on_cpu(accelerator) -> bool:
    """Switch a multi-process CPU `accelerator` to FSDP2 when FSDP was requested; return whether it switched.

    Only FSDP2 is supported here: FSDP1 needs an accelerator device. Mixed precision follows the launcher's setting
    through FSDP's policy (parameters all-gathered and gradients reduced in that dtype), as on GPUs.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested():
        return False
    plugin = FullyShardedDataParallelPlugin()  # reads the launcher's FSDP_* settings
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU processes needs fsdp_version: 2 in the Accelerate config (FSDP1 runs only on "
                         "an accelerator device)")
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # as AcceleratorState does: each later AcceleratorState() refreshes itself from the PartialState
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info("FSDP2 on %d CPU processes (gloo): Accelerate sets up FSDP only on accelerator devices, so the "
                "launcher's FSDP plugin is applied to the CPU run", state.num_processes)
    return True


def end_processes() -> None:
    """The end of a script's distributed run: shut this process's process group down while the interpreter is fully
    alive. A gloo worker thread disposes of a finished collective's tensors after the caller has moved on, and that
    needs the GIL: left to the interpreter's exit it cannot get it and the rank aborts now and then ("terminate called
    without an active exception", pytorch/pytorch#190489), and a process-group shutdown that starts before it has got
    it waits for the worker while holding the GIL, forever. So the GIL is released for a moment first (the worker
    finishes), then the group is shut down. No barrier: each rank ends when its own work is done, as before."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        time.sleep(WORKER_DRAIN_SECONDS)
        torch.distributed.destroy_process_group()
