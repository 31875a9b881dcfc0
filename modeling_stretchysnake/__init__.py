"""StretchySnake: any-scale VideoMamba for video action recognition, on the Hugging Face API.

Importing the package registers the model with the Auto classes, and marks the classes so that
`save_pretrained` writes a self-contained folder (weights + code + auto_map) that loads with
`trust_remote_code=True` where this package is not installed.
"""

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
from .scales import VARIANTS, Scale, ScaleSampler
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
