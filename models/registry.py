"""Named registries: backbone bodies, ResNet stems and ResNet blocks.

A :class:`Registry` maps names (the strings maskrcnn-benchmark configs use) to objects. Looking
up an unknown name raises :class:`~models.errors.DeformRTError` listing the valid names and the
closest match. Entries are registered explicitly where they are defined (``models/backbone.py``);
importing ``models.backbone`` fills the three registries below.

- ``BACKBONES``: ``MODEL.BACKBONE.CONV_BODY`` name -> ``models.backbone.BodySpec``.
- ``STEMS``: ``MODEL.RESNETS.STEM_FUNC`` name -> ``builder(cfg) -> nn.Module`` (the stem).
- ``BLOCKS``: ``MODEL.RESNETS.TRANS_FUNC`` name -> ``builder(cfg) -> block factory`` (see
  ``models.resnet.BlockFactory``).

The detector's heads (filled by importing ``models.detector``), each a ``builder(cfg, ...) -> nn.Module``:

- ``RPN_HEADS``: ``MODEL.RPN.RPN_HEAD`` -> ``builder(cfg, in_channels, num_anchors)``;
- ``ROI_BOX_FEATURE_EXTRACTORS`` / ``ROI_MASK_FEATURE_EXTRACTORS``: ``MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR`` /
  ``MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR`` -> ``builder(cfg, in_channels)`` (the module has ``out_channels``);
- ``ROI_BOX_PREDICTORS`` / ``ROI_MASK_PREDICTORS``: ``MODEL.ROI_BOX_HEAD.PREDICTOR`` /
  ``MODEL.ROI_MASK_HEAD.PREDICTOR`` -> ``builder(cfg, in_channels)``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, Iterator, Optional, TypeVar, overload

from models.errors import DeformRTError

T = TypeVar("T")


def closest_match(name: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most similar to ``name`` (case-insensitive), or None when nothing is close. The only
    choice that starts with ``name`` wins (``H100`` -> ``H100 SXM``, which difflib ranks below ``A100``),
    then the only one with ``name`` as a word (``Orin`` -> ``Jetson AGX Orin``)."""
    by_lower = {c.lower(): c for c in choices}
    wanted = name.lower()
    for fits in (lambda lower: lower.startswith(wanted), lambda lower: wanted in lower.split()):
        found = [c for lower, c in by_lower.items() if fits(lower)]
        if len(found) == 1:
            return found[0]
    found = difflib.get_close_matches(wanted, list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the closest choice, or an empty string."""
    match = closest_match(name, choices)
    return f" (did you mean {match!r}?)" if match is not None else ""


class Registry(Generic[T]):
    """A name -> object table whose lookups fail with a helpful :class:`DeformRTError`.

    ``what`` names the registry in error messages, e.g. ``"MODEL.BACKBONE.CONV_BODY"``.
    Names keep their registration order.
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name, obj=None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does."""
        if obj is None:
            return lambda o: self.register(name, o)
        if name in self._entries:
            raise ValueError(f"{self.what}: {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The entry for ``name``; unknown names raise DeformRTError with the valid list."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        raise DeformRTError(
            f"unknown {self.what} {name!r}{did_you_mean(str(name), self._entries)}; "
            f"valid names: {', '.join(self._entries)}"
        )

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


BACKBONES: Registry = Registry("MODEL.BACKBONE.CONV_BODY")
STEMS: Registry = Registry("MODEL.RESNETS.STEM_FUNC")
BLOCKS: Registry = Registry("MODEL.RESNETS.TRANS_FUNC")
RPN_HEADS: Registry = Registry("MODEL.RPN.RPN_HEAD")
ROI_BOX_FEATURE_EXTRACTORS: Registry = Registry("MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR")
ROI_BOX_PREDICTORS: Registry = Registry("MODEL.ROI_BOX_HEAD.PREDICTOR")
ROI_MASK_FEATURE_EXTRACTORS: Registry = Registry("MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR")
ROI_MASK_PREDICTORS: Registry = Registry("MODEL.ROI_MASK_HEAD.PREDICTOR")
