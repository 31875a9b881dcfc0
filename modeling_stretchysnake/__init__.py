"""StretchySnake: any-scale VideoMamba for video action recognition, on the Hugging Face API.

Two sides, one direction of imports. The model files at this level (configuration, modeling, resizing, the scans
and the fused mixer, the video processor and its decoding, the pipeline, label names) import only each other: they
are what `save_pretrained` copies into a model folder, which loads with `trust_remote_code=True` where this package
is not installed. The training stack (`modeling_stretchysnake.training`: Trainer, scale samplers, datasets, compute
budgets, metrics, reports, generated data) imports them and is never imported by them. The checkpoint converter, the
Hub cache (`pretrained`) and the command-line helpers sit on top of the model files.

Importing the package registers the model with the Auto classes and gives the model classes `from_videomamba`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor

from .configuration_stretchysnake import STRETCHYSNAKE_PRESETS, StretchySnakeConfig
from .modeling_stretchysnake import (
    StretchySnakeForVideoClassification,
    StretchySnakeModel,
    StretchySnakeModelOutput,
    StretchySnakePreTrainedModel,
    StretchySnakeVideoClassifierOutput,
)
from .pipeline_stretchysnake import StretchySnakeVideoClassificationPipeline
from .selective_scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from .video_processing_stretchysnake import StretchySnakeVideoProcessor

__version__ = "0.1.0"

AutoConfig.register(StretchySnakeConfig.model_type, StretchySnakeConfig, exist_ok=True)
AutoModel.register(StretchySnakeConfig, StretchySnakeModel, exist_ok=True)
AutoModelForVideoClassification.register(StretchySnakeConfig, StretchySnakeForVideoClassification, exist_ok=True)
try:  # transformers' AutoVideoProcessor needs torchvision; our processor does not
    AutoVideoProcessor.register(StretchySnakeConfig, StretchySnakeVideoProcessor, exist_ok=True)
except ImportError:
    pass

StretchySnakeConfig.register_for_auto_class()
StretchySnakeModel.register_for_auto_class("AutoModel")
StretchySnakeForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
StretchySnakeVideoProcessor.register_for_auto_class("AutoVideoProcessor")



def _from_videomamba(cls, repo_id: str, filename: str, revision: str | None = None, **kwargs):
    """An official VideoMamba checkpoint from the Hugging Face Hub, downloaded, converted once and cached, e.g.
    ``StretchySnakeForVideoClassification.from_videomamba("OpenGVLab/VideoMamba",
    "videomamba_m16_k400_f16_res224.pth")``: `modeling_stretchysnake.pretrained.from_videomamba` (token,
    force_download, and keyword arguments for ``from_pretrained``)."""
    from .pretrained import from_videomamba  # on first use: the converter sits on top of the model files

    return from_videomamba(cls, repo_id, filename, revision, **kwargs)


StretchySnakePreTrainedModel.from_videomamba = classmethod(_from_videomamba)

# Names of the training side, imported on first use, so that importing the package needs only the model's
# dependencies (PEP 562).
_TRAINING_NAMES = {"VARIANTS": "scales", "Scale": "scales", "ScaleSampler": "scales"}


def __getattr__(name):
    if name in _TRAINING_NAMES:
        return getattr(importlib.import_module(f".training.{_TRAINING_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Modules that moved to the training side (and decoding, to a module of its own): their old paths keep working,
# with a DeprecationWarning that names the new one.
MOVED_MODULES = {name: f"training.{name}" for name in ("trainer", "scales", "compute_budget", "probes", "reporting",
                                                       "synthetic_actions", "distributed", "metrics", "data")}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        """A module that forwards to the new place (the old data module: to both of its parts)."""
        name = spec.name.rpartition(".")[2]
        new = [f"{__name__}.{MOVED_MODULES[name]}"] + ([f"{__name__}.video_decoding"] if name == "data" else [])
        warnings.warn(f"{spec.name} moved to {' and '.join(new)}; import it from there", DeprecationWarning,
                      stacklevel=2)
        sources = [importlib.import_module(module) for module in new]

        def forward(attribute):
            for source in sources:
                if hasattr(source, attribute):
                    return getattr(source, attribute)
            raise AttributeError(f"module {spec.name!r} has no attribute {attribute!r}")

        module = types.ModuleType(spec.name)
        module.__getattr__ = forward
        return module

    def exec_module(self, module):
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())  # before any finder that could see a stale old file

__all__ = [
    "STRETCHYSNAKE_PRESETS",
    "VARIANTS",
    "Scale",
    "ScaleSampler",
    "StretchySnakeConfig",
    "StretchySnakeForVideoClassification",
    "StretchySnakeModel",
    "StretchySnakeModelOutput",
    "StretchySnakePreTrainedModel",
    "StretchySnakeVideoClassifierOutput",
    "StretchySnakeVideoClassificationPipeline",
    "StretchySnakeVideoProcessor",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_reference",
]
