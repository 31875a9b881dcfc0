"""The conventions an in-tree transformers model is held to, checked on StretchySnake.

Hub use is checked the way a user without this package meets it: a clean interpreter (`-I`), the package hidden,
HF_HUB_OFFLINE=1, and the model loaded by repo id from a Hugging Face cache laid out as the Hub client writes it
(models--org--name/snapshots/<commit> + refs/main), through every Auto class and the pipeline, with and without
decord installed.
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor
from modeling_stretchysnake.training.synthetic_actions import write_video

REPO_ID = "stretchysnake-tests/tiny-actions"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = {0: "left", 1: "right", 2: "still"}
HIDE_MODULES = textwrap.dedent(
    """
    import sys

    class Hide:  # these modules must play no part: make them unimportable, as if not installed
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ImportError(f"{name} is hidden for this test")

    sys.meta_path.insert(0, Hide(HIDDEN))
    for name in HIDDEN:
        try:
            __import__(name)
        except ImportError:
            continue
        raise SystemExit(f"{name} is still importable")
    """
)


def run_clean(script: str, hidden: tuple[str, ...], cwd, hf_home) -> str:
    """Run `script` in a clean interpreter with `hidden` modules unimportable, offline; return its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    code = f"HIDDEN = {hidden!r}\n{HIDE_MODULES}\n{textwrap.dedent(script)}"
    result = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def ramp_clip(path, shift: int):
    frames = np.zeros((12, 32, 48, 3), np.uint8)
    for t in range(12):
        frames[t, 8:20, 4 + shift * t: 16 + shift * t] = 220
    return write_video(path, frames, fps=12)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A model + processor 'downloaded' into an HF cache, the expected outputs, and two clips."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config(id2label=LABELS)).eval()
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    repo = root / "hf_home" / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    clips = [ramp_clip(root / "left_to_right.mp4", 2), ramp_clip(root / "still.mp4", 0)]
    pixel_values = processor([str(clip) for clip in clips])["pixel_values"]
    with torch.no_grad():
        outputs = model(pixel_values, output_hidden_states=True)
    torch.save({"pixel_values": pixel_values, "logits": outputs.logits,
                "pooled": model.stretchysnake(pixel_values).pooler_output.detach()}, root / "expected.pt")
    return root, clips


@pytest.mark.parametrize("hidden", [("modeling_stretchysnake",), ("modeling_stretchysnake", "decord")],
                         ids=["package-hidden", "package-and-decord-hidden"])
def test_every_auto_class_and_the_pipeline_load_by_repo_id_offline(hub_cache, hidden):
    root, clips = hub_cache
    stdout = run_clean(f"""
        import torch
        from transformers import (AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor,
                                  pipeline)

        repo, clips = {REPO_ID!r}, {[str(clip) for clip in clips]!r}
        expected = torch.load({str(root / "expected.pt")!r})
        config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
        assert type(config).__name__ == "StretchySnakeConfig" and config.id2label[2] == "still"
        features = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        classifier = AutoModelForVideoClassification.from_pretrained(repo, trust_remote_code=True).eval()
        for loaded in (config, features, classifier):
            assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
        assert type(features).__name__ == "StretchySnakeModel"
        classify = pipeline("video-classification", model=repo, trust_remote_code=True)
        processor = classify.video_processor
        assert type(processor).__name__ == "StretchySnakeVideoProcessor"
        try:  # transformers builds AutoVideoProcessor only where torchvision is installed (README: the rule)
            import torchvision  # noqa: F401
        except ImportError:
            try:
                AutoVideoProcessor.from_pretrained(repo, trust_remote_code=True)
                raise SystemExit("AutoVideoProcessor loaded without torchvision: update the README's rule")
            except ImportError as error:
                assert "Torchvision" in str(error), error
        else:
            processor = AutoVideoProcessor.from_pretrained(repo, trust_remote_code=True)
            assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__

        pixel_values = processor(clips)["pixel_values"]
        torch.testing.assert_close(pixel_values, expected["pixel_values"])
        with torch.no_grad():
            torch.testing.assert_close(classifier(pixel_values).logits, expected["logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(features(pixel_values).pooler_output, expected["pooled"], rtol=1e-5,
                                       atol=1e-5)

        one = classify(clips[0], top_k=3)
        both = classify(clips, top_k=3, batch_size=2)
        assert [r["label"] for r in both[0]] == [r["label"] for r in one]
        probabilities = expected["logits"].softmax(-1)
        for clip_results, row in zip(both, probabilities):
            for result in clip_results:
                label = {{v: k for k, v in config.id2label.items()}}[result["label"]]
                assert abs(result["score"] - row[label].item()) < 1e-4, (result, row)
        import sys
        print("decord loaded:", "decord" in sys.modules)
        print("hub ok")
        """, hidden, cwd=root, hf_home=root / "hf_home")
    assert "hub ok" in stdout
    if "decord" in hidden:
        assert "decord loaded: False" in stdout


def readme_python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_use_snippets_run_verbatim_without_the_package_or_decord(tmp_path):
    """The README's "Use" section: build and save (package installed), then load by folder in a clean process."""
    blocks = readme_python_blocks("Use")
    build = next(block for block in blocks if "model.save_pretrained(" in block)
    load = next(block for block in blocks if "trust_remote_code=True" in block)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ramp_clip(tmp_path / "clip.mp4", 2)
    stdout = run_clean(load + "\nprint('snippet ok')\n", ("modeling_stretchysnake", "decord"), cwd=tmp_path,
                       hf_home=tmp_path / "hf_home")
    assert "snippet ok" in stdout


# ----- outputs -----

def test_tuple_outputs_and_hidden_states(model):
    pixel_values = torch.randn(1, 2, 3, 16, 16)
    loss, logits, hidden = model(pixel_values, labels=torch.tensor([1]), output_hidden_states=True, return_dict=False)
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert all(h.dtype == torch.float32 and h.shape == (1, 33, 32) for h in hidden)
    outputs = model(pixel_values, labels=torch.tensor([1]), output_hidden_states=True)
    torch.testing.assert_close(logits, outputs.logits)
    torch.testing.assert_close(loss, outputs.loss)
    last, pooled = model.stretchysnake(pixel_values, return_dict=False)
    assert last.shape == (1, 33, 32) and pooled.shape == (1, 32)


def test_input_embeddings_are_the_patch_embedding(model):
    embeddings = model.get_input_embeddings()
    assert embeddings is model.stretchysnake.embeddings.patch_embeddings
    assert isinstance(embeddings, torch.nn.Conv3d)


# ----- problem_type heads, as transformers' classification heads -----

def test_problem_types_choose_the_loss():
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 2, 3, 16, 16)
    regression = StretchySnakeForVideoClassification(small_config(num_labels=1)).eval()
    target = torch.tensor([0.5, -1.0])
    outputs = regression(pixel_values, labels=target)
    torch.testing.assert_close(outputs.loss, F.mse_loss(outputs.logits.squeeze(-1), target))
    assert regression.config.problem_type is None  # unset: one label means regression

    multi = StretchySnakeForVideoClassification(small_config(problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    outputs = multi(pixel_values, labels=targets)
    torch.testing.assert_close(outputs.loss, F.binary_cross_entropy_with_logits(outputs.logits, targets))

    single = StretchySnakeForVideoClassification(small_config(problem_type="single_label_classification")).eval()
    labels, soft = torch.tensor([0, 2]), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])  # soft: mixup
    outputs = single(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(outputs.logits, labels))
    torch.testing.assert_close(single(pixel_values, labels=soft).loss, F.cross_entropy(outputs.logits, soft))


def test_a_model_saved_alone_runs_in_the_pipeline(model, tmp_path):
    """save_pretrained writes a video processor at the model's base scale where the folder has none, so the first
    pipeline() works; a processor saved afterwards replaces it, one saved before is kept."""
    import json

    from transformers import pipeline
    from transformers.utils import VIDEO_PROCESSOR_NAME

    model.save_pretrained(tmp_path / "alone")
    saved = json.loads((tmp_path / "alone" / VIDEO_PROCESSOR_NAME).read_text())
    assert (saved["num_frames"], saved["resolution"]) == (model.config.num_frames, model.config.image_size)
    clip = ramp_clip(tmp_path / "clip.mp4", 1)
    results = pipeline("video-classification", model=str(tmp_path / "alone"), trust_remote_code=True)(str(clip))
    assert len(results) == model.config.num_labels and all(0 <= r["score"] <= 1 for r in results)
    StretchySnakeVideoProcessor(num_frames=3, resolution=24).save_pretrained(tmp_path / "alone")  # after: replaces
    assert json.loads((tmp_path / "alone" / VIDEO_PROCESSOR_NAME).read_text())["num_frames"] == 3
    StretchySnakeVideoProcessor(num_frames=5, resolution=40).save_pretrained(tmp_path / "first")  # before: kept
    model.save_pretrained(tmp_path / "first")
    assert json.loads((tmp_path / "first" / VIDEO_PROCESSOR_NAME).read_text())["num_frames"] == 5


def test_multi_label_model_through_the_pipeline_uses_sigmoid(tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(
        small_config(problem_type="multi_label_classification", id2label=LABELS)).eval()
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    clip = ramp_clip(tmp_path / "clip.mp4", 1)
    scores = pipeline("video-classification", model=str(tmp_path / "model"), trust_remote_code=True)(str(clip), top_k=3)
    with torch.no_grad():
        expected = model(processor(str(clip))["pixel_values"]).logits.sigmoid()[0]
    for result in scores:
        label = {v: k for k, v in LABELS.items()}[result["label"]]
        assert result["score"] == pytest.approx(expected[label].item(), abs=1e-5)


# ----- training and export -----

def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config()).train()
    pixel_values, labels = torch.randn(2, 2, 3, 16, 16), torch.tensor([0, 1])

    def gradients():
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert model.stretchysnake.layers[0].gradient_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


@pytest.mark.parametrize("backend", ["auto", "chunked"])
def test_torch_export_of_the_model(model, backend):
    model.config.scan_backend = backend
    pixel_values = torch.randn(1, 2, 3, 16, 16)
    exported = torch.export.export(model, (pixel_values,))
    torch.testing.assert_close(exported.module()(pixel_values).logits, model(pixel_values).logits)
    if backend == "auto":  # each block's fused mixer is one custom op in the graph, not traced into
        targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
        assert targets.count("stretchysnake.bidirectional_mixer_fwd.default") == model.config.num_hidden_layers


def test_pipeline_honours_frame_sampling_rate_and_batch_size(tmp_path):
    from transformers import pipeline

    torch.manual_seed(0)
    # mean pooling: a fresh model's CLS token barely hears beyond the first frame, the patch tokens' mean does
    model = StretchySnakeForVideoClassification(small_config(id2label=LABELS, pooling="mean")).eval()
    processor = StretchySnakeVideoProcessor(num_frames=4, resolution=32)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)  # every frame different, so which frames are taken shows in the scores
    clips = [str(write_video(tmp_path / f"{name}.mp4", rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)))
             for name in ("a", "b")]
    classify = pipeline("video-classification", model=str(tmp_path / "model"), trust_remote_code=True)

    def probabilities(**options):
        with torch.no_grad():
            return model(processor(clips, num_frames=4, **options)["pixel_values"]).logits.softmax(-1)

    def scores(results):
        return torch.tensor([[{r["label"]: r["score"] for r in one}[LABELS[i]] for i in range(3)] for one in results])

    strided = classify(clips, top_k=3, frame_sampling_rate=3)  # frames 0, 3, 6, 9 of each clip
    torch.testing.assert_close(scores(strided), probabilities(frame_sampling_rate=3), atol=1e-5, rtol=0)
    spread = classify(clips, top_k=3)  # frames spread over the whole clip (0, 4, 7, 11)
    torch.testing.assert_close(scores(spread), probabilities(), atol=1e-5, rtol=0)
    assert not torch.allclose(scores(strided), scores(spread), atol=1e-4)
    batched = classify(clips, top_k=3, batch_size=2, frame_sampling_rate=3)
    torch.testing.assert_close(scores(batched), scores(strided), atol=1e-5, rtol=0)
