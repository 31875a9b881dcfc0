"""FSDP on CPU processes through Accelerate's own FSDP machinery.

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

logger = logging.getLogger(__name__)


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
