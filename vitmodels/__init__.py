"""Vision transformers and CNN baselines behind one registry: ``create_model(name, num_classes=, img_size=)``.

Importing the package imports every family module, which registers its entry points.
"""

from __future__ import annotations

# Imported to register their models.
from . import (  # noqa: F401
    cnn,
    convmixer,
    efficientnet,
    mlp_mixer,
    perceiver,
    perceiver_io,
    resnet,
    swin,
    tnt,
    vit,
    vit_conv,
    vit_stn,
)
from ._factory import create_model, describe_models
from ._registry import is_model, list_models, register_model
from ._wrap import Classifier
from .exceptions import InvalidArchError, PretrainedWeightsError, UnknownModelError, VitModelsError

__all__ = [
    "Classifier",
    "InvalidArchError",
    "PretrainedWeightsError",
    "UnknownModelError",
    "VitModelsError",
    "create_model",
    "describe_models",
    "is_model",
    "list_models",
    "register_model",
]
