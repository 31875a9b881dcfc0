import pytest
import torch
from transformers import TrainingArguments

from conftest import small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.training.data import VideoClipDataset
from modeling_stretchysnake.training.reporting import format_table, write_results
from modeling_stretchysnake.training.scales import Scale, ScaleSampler
from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset
from modeling_stretchysnake.training.trainer import StretchySnakeTrainer, mix_batch


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate_action_dataset(tmp_path_factory.mktemp("synthetic"), {"train": 4, "test": 2}, num_frames=8, size=32)


def make_trainer(manifest, tmp_path, **kwargs):
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(num_labels=5))
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             max_steps=kwargs.pop("max_steps", 3), learning_rate=1e-3, weight_decay=0.05,
                             logging_steps=1, report_to="none", save_strategy="no", label_smoothing_factor=0.1,
                             use_cpu=True, disable_tqdm=True)
    return StretchySnakeTrainer(
        model=model, args=args, train_dataset=VideoClipDataset(manifest["train"], processor, training=True),
        eval_dataset=VideoClipDataset(manifest["test"], processor, training=False), processing_class=processor,
        scale_sampler=ScaleSampler("static_tokens", frames=(2, 3), resolutions=(16, 32), grid=4, seed=0),
        eval_scales=[Scale(2, 16, 4), Scale(3, 32, 8)], **kwargs,
    )


def test_training_steps_log_their_scale_and_change_weights(manifest, tmp_path):
    trainer = make_trainer(manifest, tmp_path)
    before = trainer.model.stretchysnake.embeddings.patch_embeddings.weight.detach().clone()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 3
    expected = [trainer.scale_sampler.sample(step) for step in range(3)]
    assert [(e["frames"], e["resolution"], e["patch_size"]) for e in logged] == [
        (s.frames, s.resolution, s.patch_size) for s in expected
    ]
    assert not torch.equal(before, trainer.model.stretchysnake.embeddings.patch_embeddings.weight)


def test_non_finite_losses_are_counted_in_the_logs(manifest, tmp_path, caplog):
    # Trainer's logging_nan_inf_filter drops NaN from the logged loss; the count must still show up.
    trainer = make_trainer(manifest, tmp_path)
    with torch.no_grad():
        trainer.model.classifier.weight.fill_(float("nan"))
    with caplog.at_level("WARNING", logger="modeling_stretchysnake.training.trainer"):
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["nonfinite_loss_steps"] for entry in logged] == [1, 2, 3]
    assert sum("non-finite training loss at step 0" in record.message for record in caplog.records) == 1


def test_weight_decay_groups_exclude_embeddings_and_vectors(manifest, tmp_path):
    trainer = make_trainer(manifest, tmp_path)
    names = set(trainer.get_decay_parameter_names(trainer.model))
    assert "stretchysnake.layers.0.mixer.in_proj.weight" in names
    assert "classifier.weight" in names
    for excluded in ("stretchysnake.embeddings.position_embeddings", "stretchysnake.embeddings.cls_token",
                     "stretchysnake.embeddings.temporal_position_embeddings", "stretchysnake.layers.0.mixer.A_log",
                     "stretchysnake.layers.0.mixer.D", "classifier.bias", "stretchysnake.norm_f.weight"):
        assert excluded not in names


def test_layer_decay_scales_learning_rates(manifest, tmp_path):
    trainer = make_trainer(manifest, tmp_path, layer_decay=0.5)
    optimizer = trainer.create_optimizer()
    lr_of = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            lr_of[id(parameter)] = group["lr"]
    model = trainer.model
    assert lr_of[id(model.classifier.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.stretchysnake.layers[1].mixer.in_proj.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(model.stretchysnake.layers[0].mixer.in_proj.weight)] == pytest.approx(1e-3 * 0.25)
    assert lr_of[id(model.stretchysnake.embeddings.cls_token)] == pytest.approx(1e-3 * 0.125)


def test_evaluate_reports_every_scale_and_grid_means(manifest, tmp_path):
    trainer = make_trainer(manifest, tmp_path, eval_views=(2, 2))
    metrics = trainer.evaluate()
    for key in ("eval_top1@2x16", "eval_top1@3x32", "eval_top5@3x32", "eval_mean_class_acc@2x16", "eval_top1_grid_mean"):
        assert 0 <= metrics[key] <= 100
    assert metrics["eval_top5@2x16"] == 100.0  # 5 classes: the true one is always in the top 5
    assert set(trainer.last_scale_results) == {Scale(2, 16, 4), Scale(3, 32, 8)}


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0)])
def test_mix_batch_mixes_inputs_and_targets_consistently(mixup, cutmix):
    pixel_values = torch.stack([torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)])
    targets = torch.eye(2)
    mixed, soft = mix_batch(pixel_values, targets, mixup, cutmix, torch.Generator().manual_seed(1))
    torch.testing.assert_close(soft.sum(1), torch.ones(2))
    # the share of the other clip in the pixels equals its weight in the targets
    torch.testing.assert_close(mixed[0].mean(), soft[0, 1], atol=1e-5, rtol=0)


def test_results_table_and_files(tmp_path):
    results = {Scale(f, r, r // 14): {"top1": f + r / 100, "top5": 100.0} for f in (4, 8) for r in (56, 112)}
    table = format_table(results)
    assert "56px" in table and "112px" in table and "mean" in table
    paths = write_results(results, tmp_path)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert paths["csv"].read_text().splitlines()[0] == "frames,resolution,patch_size,top1,top5"


def test_checkpoints_hold_code_and_resume_continues_the_scale_sequence(manifest, tmp_path):
    first = make_trainer(manifest, tmp_path, max_steps=2)
    first.args.save_strategy, first.args.save_steps = "steps", 2
    first.train()
    checkpoint = tmp_path / "checkpoint-2"
    for name in ("model.safetensors", "modeling_stretchysnake.py", "selective_scan.py", "video_processing_stretchysnake.py",
                 "optimizer.pt", "trainer_state.json"):
        assert (checkpoint / name).exists(), name
    resumed = make_trainer(manifest, tmp_path, max_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    logged = [e for e in resumed.state.log_history if "loss" in e and e["step"] > 2]
    expected = [resumed.scale_sampler.sample(step) for step in (2, 3)]
    assert [(e["frames"], e["resolution"]) for e in logged] == [(s.frames, s.resolution) for s in expected]


def test_evaluation_counts_each_unreadable_video_once_per_view(manifest, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    trainer = make_trainer(manifest, tmp_path, eval_views=(2, 2))
    rows = [dict(manifest["test"][0]), {"video": str(broken), "label": 1}, dict(manifest["test"][2])]
    dataset = VideoClipDataset(rows, trainer.eval_dataset.processor, training=False)
    trainer.predict_scale(dataset, Scale(2, 16, 4))
    assert dataset.failures == {str(broken): 4}  # one per view (2 clips x 2 crops)


@pytest.mark.parametrize("rule", ["mean", "scaled"])
def test_token_budget_steps_log_their_clips_and_weigh_the_loss(manifest, tmp_path, rule):
    trainer = make_trainer(manifest, tmp_path, tokens_per_batch=64, max_batch_size=4, token_batch_loss=rule)
    loader = trainer.get_train_dataloader()
    batches = [batch for batch, _ in zip(loader, range(3))]
    for batch in batches:  # 2 or 3 frames x 4 x 4 tokens: 32 or 48 tokens a clip -> 2 or 1 clips
        assert len(batch["labels"]) == round(64 / (batch["pixel_values"].shape[1] * 16))
    batch = dict(batches[0])
    mean_loss = torch.nn.functional.cross_entropy(
        trainer.model(pixel_values=batch["pixel_values"], patch_size=batch["patch_size"]).logits,
        torch.nn.functional.one_hot(batch["labels"], 5).float() * 0.9 + 0.02)
    loss = trainer.compute_loss(trainer.model.train(), dict(batch))
    factor = len(batch["labels"]) / trainer._mean_clips if rule == "scaled" else 1.0
    torch.testing.assert_close(loss, mean_loss * factor)
    trainer.train()
    assert all("clips" in entry for entry in trainer.state.log_history if "loss" in entry)
    with pytest.raises(ValueError, match="token_batch_loss"):
        make_trainer(manifest, tmp_path, token_batch_loss="sum")
