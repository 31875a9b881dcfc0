"""Two machines, simulated on one: two `accelerate launch` invocations with --num_machines 2, --machine_rank 0 and 1
and one main process address and port, one process each, as the README's multi-node recipe runs on real machines.

Each "machine" writes to its own output folder. What only one job over two machines produces is asserted: world
size 2 with one rank per node, disjoint shards of the data, the same scale at every step on both, identical weights
after training. The recipe runs end to end over two nodes through the Slurm example script.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import PROBE, ROOT, fail_with_output, probe_records, script_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_machines(script_and_args, output_flag_for, cwd, timeout=600):
    """Start machine 0 and machine 1 (`output_flag_for(rank)` gives each its own flags); return both results."""
    port = str(free_port())
    env = script_env()
    machines = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(ROOT / "recipes" / "configs" / "accelerate" / "cpu_2proc.yaml"), "--num_machines", "2",
                   "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", port, *script_and_args, *output_flag_for(rank)]
        machines.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    results = []
    try:
        for machine in machines:
            stdout, stderr = machine.communicate(timeout=timeout)
            results.append((machine.returncode, stdout, stderr))
    finally:
        for machine in machines:
            machine.kill()
    for rank, (code, stdout, stderr) in enumerate(results):
        if code != 0:
            outputs = {f"machine {r} {kind}": text for r, (_, out, err) in enumerate(results)
                       for kind, text in (("stdout", out), ("stderr", err))}
            fail_with_output(f"machine {rank}'s launcher", code, **outputs)
    return results


@pytest.fixture(scope="module")
def two_machine_run(probe_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    launch_two_machines([PROBE, "--manifest", str(probe_manifest), "--max_steps", "4"],
                        lambda rank: ["--output_dir", str(root / f"machine{rank}")], root)
    return [probe_records(root / f"machine{rank}", [rank])[0] for rank in (0, 1)], root


def test_two_machines_train_one_model_on_disjoint_shards(two_machine_run):
    (rank0, rank1), root = two_machine_run
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2)
    assert (rank0["rank"], rank0["node_rank"]) == (0, 0) and (rank1["rank"], rank1["node_rank"]) == (1, 1)
    assert len(rank0["steps"]) == len(rank1["steps"]) == 4
    for mine, theirs in zip(rank0["steps"], rank1["steps"]):
        assert (mine["frames"], mine["resolution"], mine["patch_size"]) == (
            theirs["frames"], theirs["resolution"], theirs["patch_size"])
        assert not set(mine["indices"]) & set(theirs["indices"])
    assert len({(s["frames"], s["resolution"]) for s in rank0["steps"]}) > 1
    weights = [torch.load(root / f"machine{rank}" / f"rank{rank}.pt") for rank in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


FAKE_SRUN = """#!/bin/bash
# Slurm's srun for a test on one machine: the task once per node, in parallel, SLURM_NODEID set, logs per node.
while [[ "$1" == --* ]]; do shift; done
pids=()
for node in $(seq 0 $((SLURM_NNODES - 1))); do
    SLURM_NODEID=$node "$@" > "$SLURM_TEST_LOGS/node$node.out" 2> "$SLURM_TEST_LOGS/node$node.err" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


def test_recipe_over_two_machines_through_the_slurm_script(tmp_path):
    """recipes/slurm/train_multinode.sbatch on two "nodes" of one GPU each (srun and scontrol stand-ins run the
    task twice on 127.0.0.1), the recipe with its generated data: the data is rendered once on the shared
    filesystem (node 1 loads it), both nodes log their rank, and node 0 alone prints the results."""
    bin_dir, logs = tmp_path / "bin", tmp_path / "logs"
    bin_dir.mkdir()
    logs.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = script_env(PATH=f"{bin_dir}:{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
                     SLURM_TEST_LOGS=str(logs), SLURM_NNODES="2", SLURM_GPUS_ON_NODE="1",
                     SLURM_JOB_NODELIST="node[0-1]", MAIN_PORT=str(free_port()))
    flags = ["--data_root", str(tmp_path / "data"), "--generated_train_per_class", "2",
             "--generated_eval_per_class", "1", "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
             "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--train_frames", "2",
             "--train_resolutions", "28", "--eval_frames", "2", "--eval_resolutions", "28", "--base_frames", "4",
             "--baseline", "none"]
    result = subprocess.run(["bash", str(ROOT / "recipes" / "slurm" / "train_multinode.sbatch"), *flags], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    out0, err0, out1, err1 = ((logs / f"node{n}.{kind}").read_text() for n in (0, 1) for kind in ("out", "err"))
    if result.returncode != 0:
        fail_with_output("the Slurm script", result.returncode, stdout=result.stdout, stderr=result.stderr,
                         node0_stdout=out0, node0_stderr=err0, node1_stdout=out1, node1_stderr=err1)
    assert "process rank 0 of world size 2 (local rank 0, node rank 0)" in out0 + err0
    assert "process rank 1 of world size 2 (local rank 0, node rank 1)" in out1 + err1
    assert "top-1 accuracy (%) over frames x resolution" in out0
    assert "top-1 accuracy (%) over frames x resolution" not in out1
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()
    assert "Saving the dataset" in err0 and "Saving the dataset" not in err1  # node 0 rendered, node 1 loaded
    assert len(list((tmp_path / "data").rglob("*.mp4"))) == 5 * 3  # 5 classes x (2 train + 1 eval)
