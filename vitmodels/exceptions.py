"""Errors raised by :mod:`vitmodels`; one base class so callers can catch the whole package or one kind."""

from __future__ import annotations

__all__ = ["InvalidArchError", "PretrainedWeightsError", "UnknownModelError", "VitModelsError"]


class VitModelsError(Exception):
    """Base class of every error raised by vitmodels."""


class UnknownModelError(VitModelsError, ValueError):
    """The model name is neither registered nor a ``timm:<name>`` that timm knows."""


class InvalidArchError(VitModelsError, ValueError):
    """An architecture keyword is unknown, or its value cannot build a model at the requested size."""


class PretrainedWeightsError(VitModelsError, FileNotFoundError):
    """A pretrained weights file is missing, unreadable, or does not fit the model."""
