"""Multi-process CPU training through the README's command starts N processes that really train together.

What only N processes can produce is asserted: world size 2 on both ranks, disjoint shards of the data, the same
scale on every rank at every step, averaged gradients (both ranks end with identical weights, which differ from
what rank 0's shard alone trains), a resume that continues the same scale sequence, and skip counts gathered from
every rank; with token-budget batching, both ranks take the same number of clips at every step.
"""

import sys

import pytest
import torch

from conftest import PROBE, ROOT, probe_records, run_script
from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
          str(ROOT / "recipes" / "configs" / "accelerate" / "cpu_2proc.yaml")]


# Token-budget batching is on in these runs (the fixed-batch path is the recipe's, below): 128 tokens a step, so
# 4, 3 or 2 clips per process for clips of 32, 48 or 64 tokens (2-4 frames x a 4 x 4 grid).
TOKENS = ["--tokens_per_batch", "128"]


@pytest.fixture(scope="module")
def two_process_run(probe_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("mp_run")
    run_script(LAUNCH + [PROBE, "--manifest", str(probe_manifest), "--output_dir", str(out), "--max_steps", "4",
                         "--save_steps", "2", *TOKENS], out, timeout=900)
    return out


def test_two_processes_train_disjoint_shards_at_one_scale_per_step(two_process_run):
    from modeling_stretchysnake.training.data import clips_per_step
    from modeling_stretchysnake.training.scales import Scale

    rank0, rank1 = probe_records(two_process_run)
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2) and (rank0["rank"], rank1["rank"]) == (0, 1)
    assert [s["step"] for s in rank0["steps"]] == [s["step"] for s in rank1["steps"]] == [1, 2, 3, 4]
    for mine, theirs in zip(rank0["steps"], rank1["steps"]):
        scale = Scale(mine["frames"], mine["resolution"], mine["patch_size"])
        assert scale == Scale(theirs["frames"], theirs["resolution"], theirs["patch_size"]), (mine, theirs)
        assert len(mine["indices"]) == len(theirs["indices"]) == clips_per_step(scale, 2, 128, 4)
        assert not set(mine["indices"]) & set(theirs["indices"])
    assert len({(s["frames"], s["resolution"]) for s in rank0["steps"]}) > 1  # the scale does change
    assert len({len(s["indices"]) for s in rank0["steps"]}) > 1  # and with it the clips per step


def test_gradients_are_averaged_across_processes(two_process_run, probe_manifest, tmp_path):
    weights = [torch.load(two_process_run / f"rank{rank}.pt") for rank in (0, 1)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name  # each rank saw other clips, yet the weights agree
    run_script([sys.executable, PROBE, "--manifest", str(probe_manifest), "--output_dir", str(tmp_path), "--max_steps",
                "4", "--shard", "0/2", *TOKENS], tmp_path, timeout=600)
    (alone,) = probe_records(tmp_path, [0])
    assert alone["world_size"] == 1
    assert [s["indices"] for s in alone["steps"]] == [s["indices"] for s in probe_records(two_process_run)[0]["steps"]]
    alone_weights = torch.load(tmp_path / "rank0.pt")
    largest = max((alone_weights[name] - value).abs().max().item() for name, value in weights[0].items())
    assert largest > 1e-4, "rank 0's weights ignore rank 1's gradients"


def test_resume_continues_the_same_scale_sequence(two_process_run, probe_manifest, tmp_path):
    run_script(LAUNCH + [PROBE, "--manifest", str(probe_manifest), "--output_dir", str(tmp_path), "--max_steps", "4",
                         "--resume_from_checkpoint", str(two_process_run / "checkpoint-2"), *TOKENS], tmp_path,
               timeout=900)
    for resumed, original in zip(probe_records(tmp_path), probe_records(two_process_run)):
        assert resumed["world_size"] == 2
        assert resumed["steps"] == original["steps"][2:]  # steps 3 and 4: same scales, same clips
    for rank in (0, 1):
        resumed_weights, original_weights = (torch.load(folder / f"rank{rank}.pt")
                                             for folder in (tmp_path, two_process_run))
        for name, value in original_weights.items():
            torch.testing.assert_close(resumed_weights[name], value, msg=name)


def test_recipe_logs_every_rank_and_gathers_skips(tmp_path):
    """The README's 2-process command on the recipe: both ranks report in, and an unreadable video that only rank
    1 meets (evaluation shards rank::2) is in the summary rank 0 prints."""
    from datasets import Dataset, DatasetDict

    manifest = generate_action_dataset(tmp_path / "data", {"train": 2, "test": 1}, num_frames=6, size=32)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00garbage" * 64)
    test_rows = manifest["test"].to_list()[:1] + [dict(manifest["test"][1], video=str(broken))]
    DatasetDict({"train": manifest["train"], "test": Dataset.from_list(test_rows, features=manifest["test"].features)}
                ).save_to_disk(str(tmp_path / "manifest"))
    result = run_script(LAUNCH + [
        str(ROOT / "recipes" / "train.py"), "--manifest", str(tmp_path / "manifest"), "--output_dir",
        str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2", "--train_frames", "2", "--train_resolutions", "28",
        "--eval_frames", "2", "--eval_resolutions", "28", "--base_frames", "4", "--baseline", "none"], tmp_path,
        timeout=900)
    logs = result.stdout + result.stderr
    for rank in (0, 1):
        assert f"process rank {rank} of world size 2" in logs
    assert result.stdout.count("top-1 accuracy (%) over frames x resolution") == 1  # rank 0 prints the summary
    assert "unreadable videos skipped: 1 distinct file(s) over all processes" in result.stdout
    assert "broken.mp4" in result.stdout.split("unreadable videos skipped")[1]
    # every parameter trains every step: the recipe turns off DDP's per-step search for unused ones
    assert "find_unused_parameters=True was specified" not in logs
