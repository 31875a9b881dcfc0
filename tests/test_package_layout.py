"""Two packages, one direction of imports: the model files import only each other, a saved model folder holds only
them, a core install (no training libraries) runs a model and its processor, the import graph has no cycle, and the
old module paths still work with a warning that names the new ones."""

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from conftest import ROOT, script_env, small_config
from modeling_stretchysnake import StretchySnakeForVideoClassification, StretchySnakeVideoProcessor

PACKAGE = ROOT / "modeling_stretchysnake"
# What a model folder needs, and all the model side is: config, modeling, resizing, scans and mixer, the processor
# and its decoding, the pipeline.
MODEL_FILES = {"configuration_stretchysnake.py", "modeling_stretchysnake.py", "resizing.py", "selective_scan.py",
               "selective_scan_fused.py", "selective_scan_numba.py", "numba_cache.py", "selective_scan_triton.py",
               "bidirectional_mixer.py", "custom_ops.py", "video_processing_stretchysnake.py", "video_decoding.py",
               "pipeline_stretchysnake.py", "cascade.py"}
TOOLS = {"__init__.py", "convert_videomamba_checkpoint.py", "pretrained.py", "cli.py"}  # on top of the model files
TRAINING_LIBRARIES = ("datasets", "accelerate", "evaluate", "matplotlib")

# Run first in a subprocess: the training libraries and the training side are absent, as in a core install: an
# import raises ModuleNotFoundError, and importlib.util.find_spec (how transformers probes optional packages) finds
# nothing.
WITHOUT_TRAINING = textwrap.dedent(
    f"""
    import importlib.abc, importlib.util, sys

    def absent(name):
        return name.split(".")[0] in {TRAINING_LIBRARIES!r} or name.startswith("modeling_stretchysnake.training")

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if absent(name):
                raise ModuleNotFoundError(f"No module named {{name!r}} (absent in this test)")
            return None

    real_find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: None if absent(name) else real_find_spec(name, package)
    sys.meta_path.insert(0, Absent())
    """
)


def run_without_training(code: str, tmp_path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRAINING + textwrap.dedent(code)], cwd=tmp_path,
                            env=script_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_the_package_is_model_files_tools_and_the_training_subpackage():
    assert {path.name for path in PACKAGE.glob("*.py")} == MODEL_FILES | TOOLS
    assert (PACKAGE / "training" / "trainer.py").exists() and (PACKAGE / "labels").is_dir()


def test_a_saved_model_folder_holds_model_files_only(tmp_path):
    torch.manual_seed(0)
    model = StretchySnakeForVideoClassification(small_config())
    model.save_pretrained(tmp_path)
    StretchySnakeVideoProcessor(num_frames=4, resolution=32).save_pretrained(tmp_path)
    code = {path.name for path in tmp_path.glob("*.py")}
    assert code <= MODEL_FILES and {"modeling_stretchysnake.py", "video_processing_stretchysnake.py",
                                    "video_decoding.py", "pipeline_stretchysnake.py"} <= code, code


def relative_imports(path: Path) -> set[str]:
    """The package modules a file imports anywhere (module level or inside functions; not under an
    `if __name__ == "__main__":` guard, which never runs on import), as dotted names relative to the package
    ("training.scales", "configuration_stretchysnake")."""
    package = path.parent.relative_to(PACKAGE).parts
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = [*base, *node.module.split(".")] if node.module else base
                found |= ({".".join([*module, alias.name]) for alias in node.names} if not node.module
                          else {".".join(module)})
            elif node.module and node.module.startswith("modeling_stretchysnake."):
                found.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("."):
                found.add(".".join([*package, node.args[0].value.lstrip(".")]))
    return found


def test_model_files_import_only_model_files_and_the_graph_has_no_cycle():
    modules = {".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
               for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" and "video_accuracy" not in path.parts}
    graph = {name: {target for target in relative_imports(path) if target in modules}
             for name, path in modules.items()}
    model = {name[:-3] for name in MODEL_FILES}
    for name in model:
        assert graph[name] <= model, (name, graph[name] - model)
    state = {}  # depth-first search: 1 on the stack, 2 done

    def visit(name, trail):
        state[name] = 1
        for target in graph[name]:
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*trail, name, target])}"
            if target not in state:
                visit(target, [*trail, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])
    assert graph["training.trainer"] and "pretrained" in graph and graph["pretrained"] >= {"convert_videomamba_checkpoint"}


def test_each_model_module_imports_alone_without_the_training_side(tmp_path):
    """Each module of the model package imported first, in a process of its own (forked after torch and transformers
    are loaded, before any of this package), with the training side absent: it imports, and loads no training
    module."""
    modules = sorted(name[:-3] for name in MODEL_FILES | TOOLS - {"__init__.py"})
    result = run_without_training(f"""
        import importlib, os, sys
        import torch, transformers  # third-party start-up, shared by the forks
        assert not any(name.startswith("modeling_stretchysnake") for name in sys.modules)
        for module in {modules!r}:
            child = os.fork()
            if child == 0:
                code = 0
                try:
                    importlib.import_module("modeling_stretchysnake." + module)
                    loaded = sorted(m for m in sys.modules if m.startswith("modeling_stretchysnake.training"))
                    print(module, "ok" if not loaded else f"loaded {{loaded}}", flush=True)
                except BaseException as error:
                    print(module, "failed:", repr(error), flush=True)
                    code = 1
                os._exit(code)
            os.waitpid(child, 0)
        """, tmp_path)
    assert result.stdout.split("\n")[:-1] == [f"{module} ok" for module in modules], result.stdout


def test_a_core_install_converts_saves_loads_runs_and_processes(tmp_path):
    """Without datasets, accelerate, evaluate and matplotlib: convert an official checkpoint, save, load through the
    Auto classes, run a forward at two scales, and prepare a clip with the processor."""
    from test_convert_videomamba_checkpoint import official_tiny_state_dict

    torch.save({"model": official_tiny_state_dict(depth=2, dim=32, num_classes=5)}, tmp_path / "official.pth")
    result = run_without_training("""
        import numpy as np, torch
        from transformers import AutoModelForVideoClassification
        from modeling_stretchysnake import StretchySnakeVideoProcessor
        from modeling_stretchysnake.convert_videomamba_checkpoint import convert_checkpoint
        convert_checkpoint("official.pth", "converted")
        model = AutoModelForVideoClassification.from_pretrained("converted").eval()
        processor = StretchySnakeVideoProcessor.from_pretrained("converted")
        clip = np.random.default_rng(0).integers(0, 255, (12, 40, 56, 3), dtype=np.uint8)
        for scale in ((4, 32), (8, 64)):
            pixel_values = processor(clip, scale=scale)["pixel_values"]
            with torch.no_grad():
                print(tuple(pixel_values.shape), tuple(model(pixel_values).logits.shape))
        """, tmp_path)
    assert result.stdout.split("\n")[:2] == ["(1, 4, 3, 32, 32) (1, 5)", "(1, 8, 3, 64, 64) (1, 5)"], result.stdout


def test_a_core_install_meets_a_video_file_and_says_what_to_install(tmp_path):
    """The core install has no video decoder (PyAV and decord are the `video` extra): a video file gets one line
    saying so and how to install one; a path that does not exist says that first."""
    import numpy as np

    from modeling_stretchysnake.training.synthetic_actions import write_video

    write_video(tmp_path / "clip.mp4", np.zeros((4, 16, 16, 3), np.uint8))
    result = run_without_training("""
        import importlib.util, sys
        decoder = lambda name: name.split(".")[0] in ("av", "decord")
        class NoDecoders:
            def find_spec(self, name, path=None, target=None):
                if decoder(name):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, NoDecoders())
        find_spec = importlib.util.find_spec
        importlib.util.find_spec = lambda name, package=None: None if decoder(name) else find_spec(name, package)
        from modeling_stretchysnake import StretchySnakeVideoProcessor
        processor = StretchySnakeVideoProcessor(num_frames=2, resolution=16)
        for video in ("missing.mp4", "clip.mp4"):
            try:
                processor(video)
            except Exception as error:
                print(type(error).__name__, "|", error)
        """, tmp_path)
    missing, present = result.stdout.splitlines()[:2]
    assert missing == "VideoDecodeError | cannot decode missing.mp4: no such file", missing
    assert present.startswith("ImportError | cannot decode clip.mp4: no video decoder is installed"), present
    assert "pip install av" in present and "stretchysnake[video]" in present and "ModuleNotFoundError" not in present


def test_old_module_paths_keep_working_and_name_the_new_place():
    moved = [("trainer", "training.trainer", "StretchySnakeTrainer"),
             ("synthetic_actions", "training.synthetic_actions", "generate_action_dataset"),
             ("metrics", "training.metrics", "load_video_accuracy"),
             ("data", "training.data", "VideoClipDataset"), ("data", "video_decoding", "read_video")]
    code = textwrap.dedent(f"""
        import importlib, warnings
        warnings.simplefilter("always")
        for old, new, name in {moved!r}:
            with warnings.catch_warnings(record=True) as caught:
                moved = getattr(importlib.import_module("modeling_stretchysnake." + old), name)
            assert moved is getattr(importlib.import_module("modeling_stretchysnake." + new), name), (old, name)
            print(old, [str(w.message) for w in caught if w.category is DeprecationWarning])
        """)
    result = subprocess.run([sys.executable, "-c", code], env=script_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    warned = {}  # the first import of an old path warns (later ones find the module imported)
    for line in result.stdout.splitlines():
        old, messages = line.split(" ", 1)
        warned.setdefault(old, messages)
    for old, new, _ in moved:
        assert f"modeling_stretchysnake.{old} moved to" in warned[old] and f"modeling_stretchysnake.{new}" in warned[old]


def test_readme_is_a_short_manual_whose_links_resolve():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 250
    pages = [readme, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 9
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)
