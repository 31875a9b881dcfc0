import json
import os
import subprocess
import tempfile
from pathlib import Path

# One numba cache for the whole run, shared by both pytest workers and every script the tests start (they inherit
# the environment): the CPU kernels compile once per run (cpu_kernels_compiled), and no test that starts a process
# waits on a compile it does not check. Tests of compiling itself give their scripts an empty cache of their own.
RUN_FOLDER = Path(tempfile.gettempdir()) / "stretchysnake-tests" / os.environ.get("PYTEST_XDIST_TESTRUNUID",
                                                                                f"run-{os.getpid()}")
os.environ.setdefault("NUMBA_CACHE_DIR", str(RUN_FOLDER / "numba"))
# datasets' cache of prepared local datasets is keyed by the folder's name and its files' names, not their place:
# two tests' folders named alike would share an entry (and the user's cache would serve an old run's)
os.environ["HF_DATASETS_CACHE"] = str(RUN_FOLDER / "hf_datasets")

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402

from modeling_stretchysnake import StretchySnakeConfig, StretchySnakeForVideoClassification  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "multiprocess_probe.py")  # a few recorded training steps (multi-process tests)


def script_env(**extra) -> dict:
    """The environment of a script the tests start: the repository on PYTHONPATH, one thread, `extra` on top."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", **extra}


def fail_with_output(what: str, returncode: int, **outputs: str):
    """Fail the test with the whole output of a failed subprocess (every rank's, for a launcher): pytest shows a
    pytest.fail message in full, where it cuts a long assertion message."""
    sections = "".join(f"\n----- {name} -----\n{text}" for name, text in outputs.items())
    pytest.fail(f"{what} exited with {returncode}{sections}", pytrace=False)


def run_script(command, cwd, timeout=600):
    """Run a recipe or bench script in a subprocess (script_env); fail with its whole output unless it succeeded."""
    result = subprocess.run(command, cwd=cwd, env=script_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        fail_with_output(" ".join(map(str, command[:6])) + " ...", result.returncode, stdout=result.stdout,
                         stderr=result.stderr)
    return result


def small_config(**overrides) -> StretchySnakeConfig:
    """A few-thousand-parameter model with a 4x4 base grid (32 px, patch 8) and 4 base frames."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        num_frames=4,
        num_labels=3,
        drop_path_rate=0.0,
    )
    values.update(overrides)
    return StretchySnakeConfig(**values)


@pytest.fixture(autouse=True, scope="session")
def cost_cache_in_a_temporary_folder(tmp_path_factory):
    """compute_budget caches measured forward times under the home folder: keep the tests' out of it."""
    os.environ["STRETCHYSNAKE_CACHE"] = str(tmp_path_factory.mktemp("stretchysnake_cache"))


@pytest.fixture(autouse=True, scope="session")
def cpu_kernels_compiled():
    """The float32 kernels, forward and backward, compiled (by the first worker; the other waits, then loads them)
    before the first test."""
    from modeling_stretchysnake.selective_scan_fused import numba_available, numba_kernels

    if numba_available():
        os.makedirs(os.environ["NUMBA_CACHE_DIR"], exist_ok=True)
        with FileLock(os.path.join(os.environ["NUMBA_CACHE_DIR"], "compiling.lock")):
            numba_kernels().prepare(["conv_silu_forward", "scan_forward", "conv_silu_backward", "scan_backward"],
                                    "float32")


@pytest.fixture
def config():
    return small_config()


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return StretchySnakeForVideoClassification(config).eval()


@pytest.fixture(scope="module")
def probe_manifest(tmp_path_factory):
    """20 training clips (5 classes x 4) of 6 frames at 32 px for the multi-process probe runs."""
    from modeling_stretchysnake.training.synthetic_actions import generate_action_dataset

    root = tmp_path_factory.mktemp("probe_data")
    generate_action_dataset(root, {"train": 4, "test": 1}, num_frames=6, size=32)
    return root / "manifest"


def probe_records(folder, ranks=(0, 1)):
    """What each rank of a probe run recorded (tests/multiprocess_probe.py)."""
    return [json.loads((Path(folder) / f"rank{rank}.json").read_text()) for rank in ranks]
