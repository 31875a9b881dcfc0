"""The FSDP Accelerate config really shards on CPU processes (gloo), through Accelerate's and the Trainer's FSDP code.

Launched the way a user launches it (`accelerate launch --config_file recipes/configs/accelerate/fsdp.yaml`, with
the process count and precision given on the command line). What only sharding produces is asserted: each rank
holds about half of every block parameter, the loss follows a one-process run on the same global batch, the
checkpoints hold shards and a resume from them continues with the losses of the uninterrupted run, and the final
save is one whole model that loads anywhere. The recipe itself is run under FSDP with bf16 mixed precision.
"""

import json
import sys

import pytest
import torch

from conftest import PROBE, ROOT, probe_records, run_script
from modeling_stretchysnake import StretchySnakeForVideoClassification
from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

FSDP_CONFIG = ROOT / "recipes" / "configs" / "accelerate" / "fsdp.yaml"


def fsdp_launch(mixed_precision="no"):
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
            "--num_processes", "2", "--mixed_precision", mixed_precision, "--main_process_port", "0"]




@pytest.fixture(scope="module")
def fsdp_run(probe_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_run")
    run_script(fsdp_launch() + [PROBE, "--manifest", str(probe_manifest), "--output_dir", str(out), "--max_steps", "4",
                                "--save_steps", "2", "--final"], out, timeout=900)
    return out


@pytest.fixture(scope="module")
def one_process_run(probe_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_reference")
    run_script([sys.executable, PROBE, "--manifest", str(probe_manifest), "--output_dir", str(out), "--max_steps", "4",
                "--global_batch", "2"], out, timeout=600)
    return out


def test_each_rank_holds_half_of_every_block_parameter(fsdp_run):
    rank0, rank1 = probe_records(fsdp_run)
    assert rank0["distributed_type"] == rank1["distributed_type"] == "FSDP"
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["shards"].keys() == rank1["shards"].keys() and len(rank0["shards"]) >= 10
    for name, (full, local0) in rank0["shards"].items():
        full1, local1 = rank1["shards"][name]
        assert full == full1
        # dim 0 split in two (the first rank takes the rounded-up half), the other dims whole
        assert [local0[0], local1[0]] == [(full[0] + 1) // 2, full[0] // 2], name
        assert local0[1:] == local1[1:] == full[1:], name


def test_loss_matches_one_process_on_the_same_global_batch(fsdp_run, one_process_run):
    rank0, rank1 = probe_records(fsdp_run)
    (alone,) = probe_records(one_process_run, [0])
    assert alone["world_size"] == 1 and alone["distributed_type"] == "NO"
    for step, (mine, theirs, together) in enumerate(zip(rank0["steps"], rank1["steps"], alone["steps"]), 1):
        assert together["indices"] == mine["indices"] + theirs["indices"]  # the same clips, at the same scale
        assert (mine["frames"], mine["resolution"]) == (together["frames"], together["resolution"])
        # equal clips per rank: the global batch's mean loss is the mean of the ranks' means
        assert (mine["loss"] + theirs["loss"]) / 2 == pytest.approx(together["loss"], rel=1e-4, abs=1e-5), step
    assert len(alone["steps"]) == 4
    sharded, whole = torch.load(fsdp_run / "rank0.pt"), torch.load(one_process_run / "rank0.pt")
    for name, value in whole.items():  # 4 steps of averaged, sharded gradients end where one process ends
        torch.testing.assert_close(sharded[name], value, rtol=1e-3, atol=1e-4, msg=name)
    assert not (fsdp_run / "rank1.pt").exists()  # the gathered state dict is whole on rank 0 only


def test_checkpoints_are_sharded_and_resume_continues_the_same_losses(fsdp_run, probe_manifest, tmp_path):
    checkpoint = fsdp_run / "checkpoint-2"
    model_shards = list((checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    optimizer_shards = list((checkpoint / "optimizer_0").glob("*.distcp"))
    assert len(model_shards) == len(optimizer_shards) == 2  # one file per rank
    assert not (checkpoint / "model.safetensors").exists() and not (checkpoint / "optimizer.pt").exists()
    run_script(fsdp_launch() + [PROBE, "--manifest", str(probe_manifest), "--output_dir", str(tmp_path), "--max_steps",
                                "4", "--resume_from_checkpoint", str(checkpoint)], tmp_path, timeout=900)
    for resumed, original in zip(probe_records(tmp_path), probe_records(fsdp_run)):
        assert [s["step"] for s in resumed["steps"]] == [3, 4]
        for mine, uninterrupted in zip(resumed["steps"], original["steps"][2:]):
            assert mine["indices"] == uninterrupted["indices"]
            assert mine["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-5, abs=1e-6)
    resumed_weights, original_weights = (torch.load(folder / "rank0.pt") for folder in (tmp_path, fsdp_run))
    for name, value in original_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, msg=name)


def test_final_save_is_one_whole_loadable_model(fsdp_run):
    final = fsdp_run / "final"
    assert (final / "model.safetensors").exists() and not list(final.glob("*.distcp"))
    # saved code and auto_map name our classes, not the FSDP<Name> class fully_shard generates in torch
    assert not list(final.glob("_fsdp*.py")) and (final / "modeling_stretchysnake.py").exists()
    auto_map = json.loads((final / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForVideoClassification"] == "modeling_stretchysnake.StretchySnakeForVideoClassification"
    model = StretchySnakeForVideoClassification.from_pretrained(final)
    trained = torch.load(fsdp_run / "rank0.pt")
    state = model.state_dict()
    assert state.keys() == trained.keys()
    for name, value in trained.items():
        assert torch.equal(state[name], value), name
    assert torch.isfinite(model(torch.randn(1, 4, 3, 32, 32)).logits).all()


def test_recipe_trains_with_fsdp_and_bf16_mixed_precision(tmp_path):
    """The recipe under the FSDP config with bf16 (parameters all-gathered and gradients reduce-scattered in bf16 by
    FSDP's policy, gloo on CPU): it trains, evaluates 3 videos over 2 ranks (uneven shards: the ranks must still
    run the same number of forward passes) and saves a whole fp32 model."""
    manifest = generate_action_dataset(tmp_path / "data", {"train": 2, "test": 1}, num_frames=6, size=32)
    manifest["test"] = manifest["test"].select(range(3))
    manifest.save_to_disk(str(tmp_path / "manifest"))
    result = run_script(fsdp_launch("bf16") + [
        str(ROOT / "recipes" / "train.py"), "--manifest", str(tmp_path / "manifest"), "--output_dir",
        str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "2", "--logging_steps", "1",
        "--per_device_eval_batch_size", "1", "--train_frames", "2", "--train_resolutions", "28", "--eval_frames",
        "2", "--eval_resolutions", "28", "--base_frames", "4", "--baseline", "none"], tmp_path, timeout=900)
    logs = result.stdout + result.stderr
    assert logs.count("FSDP2 on 2 CPU processes") == 2  # both ranks switched to FSDP
    assert "DistributedDataParallel" not in logs and "reducer" not in logs
    losses = [json.loads(line.replace("'", '"'))["loss"] for line in result.stdout.splitlines()
              if line.startswith("{'loss'")]
    assert len(losses) == 2 and all(float(loss) > 0 for loss in losses)
    model = StretchySnakeForVideoClassification.from_pretrained(tmp_path / "out" / "final")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert "top-1 accuracy (%) over frames x resolution" in result.stdout
