"""Load maskrcnn-benchmark, Detectron (Caffe2) and torchvision checkpoints into a backbone.

:func:`load_checkpoint` reads one file, renames its tensors to the model's state-dict keys
(``body.stem.conv1.weight``, ``body.layer2.0.conv2.conv.weight``, ``fpn.fpn_inner1.weight`` ...),
checks every shape, and only then copies the values into the model, so a failed load leaves the
model untouched. It returns a :class:`LoadReport` that accounts for every model key and every
file entry; nothing is left at its initial value silently (upstream's loader does that).

Formats, recognised by content (the ``.pkl`` extension only decides for pickles that do not
start with a protocol marker):

``maskrcnn-benchmark``
    A ``.pth`` (zip or legacy) or ``.safetensors`` holding ``{"model": state_dict, ...}`` or a
    bare state dict. A leading ``module.`` (DistributedDataParallel) is dropped, then
    ``backbone.``. In a whole-detector checkpoint (any ``backbone.`` key) the keys outside the
    backbone (``rpn.``, ``roi_heads.`` ...) are skipped and counted. Keys then match exactly
    (no suffix guessing), which is what upstream's own checkpoints need.
``detectron-c2``
    A Caffe2 Detectron pickle (``blobs`` if present, else the top level). ``*_momentum`` and the
    ImageNet classifier (``fc1000_*``, ``pred_*``) are ignored; blobs that belong to no backbone
    part (RPN, box and mask heads) are skipped. Renames: ``conv1_w`` -> ``body.stem.conv1``;
    ``res_conv1_bn_*`` / ``conv1_gn_*`` -> ``body.stem.bn1``; ``res{s}_{b}_branch2{a,b,c}`` ->
    ``body.layer{s-1}.{b}.conv{1,2,3}`` with norms ``_bn_*`` / ``_gn_*`` -> ``bn{1,2,3}``;
    ``branch1`` -> ``downsample.0`` / ``downsample.1``; ``_s`` -> ``weight``, ``_b`` -> ``bias``;
    ``fpn_inner_res{s}_{i}_sum[_lateral]`` -> ``fpn.fpn_inner{s-1}``, ``fpn_res{s}_{i}_sum`` ->
    ``fpn.fpn_layer{s-1}``, ``fpn_6`` / ``fpn_7`` -> ``fpn.top_blocks.p6`` / ``p7``. The block
    index ``i`` of FPN blobs is read from the blob name and checked against the model's last
    block of that stage (a warning if they disagree). ``conv2`` of a deformable stage becomes
    ``conv2.conv``, and GN-FPN convs ``fpn_inner{k}.0``, as the model dictates. C2 files hold
    no BN running statistics: the model's FrozenBN ``running_mean`` / ``running_var`` are set
    to 0 / 1, which makes FrozenBN exactly Caffe2's AffineChannel.
``torchvision``
    An ImageNet classifier ``.pth`` / ``.safetensors`` (``conv1.weight``, ``bn1.*``,
    ``layer1.0.downsample.0.weight`` ...): ``conv1`` / ``bn1`` -> ``body.stem.*``, ``layer*`` ->
    ``body.layer*``; ``fc.*`` and ``num_batches_tracked`` ignored. These weights expect the stride
    on the 3x3 conv (``STRIDE_IN_1X1=False``); the report warns when the model has it on the 1x1.

Whole detectors (:func:`models.detector.build_detector`: keys ``backbone.*``, ``rpn.*``,
``roi_heads.*``) load the same files. A maskrcnn-benchmark checkpoint loads key for key, heads
included (the cell anchors upstream stores as buffers too); a backbone-only file fills
``backbone.*``. Detectron pickles map their head blobs by upstream's rename rules:
``conv_rpn[_fpn2]`` / ``rpn_cls_logits[_fpn2]`` / ``rpn_bbox_pred[_fpn2]`` -> ``rpn.head.conv`` /
``cls_logits`` / ``bbox_pred``; ``fc6`` / ``fc7`` -> the box feature extractor's; ``cls_score`` /
``bbox_pred`` -> ``roi_heads.box.predictor``; ``_[mask]_fcn{i}`` -> ``roi_heads.mask.feature_extractor.mask_fcn{i}``;
``conv5_mask`` / ``mask_fcn_logits`` -> ``roi_heads.mask.predictor``; a C4 model's ``res5_*`` blobs ->
the box head's ``head.layer4``. Tensors a model holds under two names (upstream's C4 mask head
shares the box head's feature extractor) count as loaded when either name is. Anchors are
computed from the config, so a file without them (Detectron pickles) leaves them as computed:
they are reported as "not in file (computed from the config)".

Which absent model keys count as missing (the strict rule):

* From an ImageNet-style init file (detectron-c2 or torchvision), the deformable offset convs
  (``*.conv2.offset.*``) are expected to be absent: upstream trains them from their kaiming
  init. They are reported as "not in file (trained from init)", and so is the whole ``fpn.``
  subtree when the file holds no FPN weights at all. Stages of the file the model lacks
  (``res5`` for a C4 body) are skipped, not unexpected.
* From a maskrcnn-benchmark checkpoint every model key is required: it is a trained model,
  offsets included.
* Everything else absent is *missing*. ``strict=True`` raises :class:`CheckpointMismatchError`
  when anything is missing (naming the first few and the count); ``strict=False`` loads the rest
  and lists the missing keys in the report.

Unexpected entries are entries that should be the model's and map to no model key. They mean a
checkpoint for another model. One rule covers both kinds of model, what differs is which entries
are the model's:

* a backbone: the backbone entries (a bare state dict's keys, a whole detector's ``backbone.*``
  keys, routed C2 or torchvision blobs). Entries outside the backbone (detector heads) are never
  unexpected there: they are skipped and counted;
* a whole detector: every entry of a maskrcnn-benchmark file (it loads key for key), and every
  routed C2 blob. A head tensor the detector lacks (a mask head given to a Faster R-CNN config) is
  unexpected like a backbone tensor of another depth.

Unexpected backbone entries mean another depth (``body.layer3.6..22`` of an R-101 in an R-50), DCN
where the model has none, an FPN the body lacks. With ``strict=True`` unexpected entries fail the
load too (:class:`CheckpointMismatchError`), unless ``allow_unexpected=True``, which loads the rest
and lists them. Both errors name the body the file looks like (:func:`guess_body`) when it is not
the model's, and for a detector the heads that one side has and the other lacks. A shape mismatch
always fails, naming the key and both shapes.

Checkpoints are untrusted input. ``.pth`` files are read with ``torch.load(weights_only=True)``;
one that needs any other global is refused with a one-line error naming it. Pickles go through
:func:`models.safe_pickle.load_pickle`, which admits only containers, numbers, strings and numpy
arrays; a file that asks to run anything else is refused before it runs.
"""

from __future__ import annotations

import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.errors import DeformRTError, require_file
from models.safe_pickle import load_pickle

MASKRCNN_BENCHMARK = "maskrcnn-benchmark"
DETECTRON_C2 = "detectron-c2"
TORCHVISION = "torchvision"

_SHOWN = 5  # how many names a message or report line lists before "(+N more)"


def _names(keys: list[str], limit: int = _SHOWN) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


class CheckpointMismatchError(DeformRTError):
    """The checkpoint is for another model: model tensors missing from it (``kind="missing"``) or
    backbone tensors in it that the model does not have (``kind="unexpected"``).

    ``reason`` says what and which model the file looks like; ``str()`` adds how a Python caller
    loads it anyway. A front end with its own spelling of that override (the CLI's
    ``--allow-unexpected``) uses :meth:`with_hint` instead."""

    PYTHON_HINTS = {"missing": "strict=False loads the rest and lists them",
                    "unexpected": "allow_unexpected=True loads the rest and lists them"}

    def __init__(self, reason: str, kind: str):
        self.reason = reason
        self.kind = kind
        super().__init__(self.with_hint(self.PYTHON_HINTS[kind]))

    def with_hint(self, hint: str | None) -> str:
        """The message with ``hint`` (how to load it anyway) in parentheses, or none."""
        return f"{self.reason} ({hint})" if hint else self.reason


_RESNET_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def _blocks_per_stage(keys) -> dict[int, int]:
    """``{layer index: block count}`` of ``body.layerN.B.`` model-style keys."""
    last = _last_blocks(dict.fromkeys(keys))
    return {layer: block + 1 for layer, block in last.items()}


def _dcn_stages(keys) -> list[str]:
    """The ``resN`` stages whose conv2 is deformable in model-style keys (offset convs present)."""
    found = {int(m.group(1)) for k in keys for m in [re.match(r"body\.layer(\d+)\.\d+\.conv2\.offset\.", k)] if m}
    return [f"res{layer + 1}" for layer in sorted(found)]


def guess_body(keys) -> str | None:
    """The registry body whose tensors ``keys`` (model-style names: ``body.layer3.22.conv1.weight``,
    ``fpn.fpn_inner4.weight`` ...) look like, or None when the ResNet stages match no known depth.

    Blocks per stage give the depth (3-4-6-3: 50, 3-4-23-3: 101, 3-8-36-3: 152); ``fpn.`` keys an
    FPN body, and ``fpn.top_blocks.p6`` a RetinaNet one; without FPN, a fourth stage means C5, else C4.
    """
    from models.backbone import list_bodies

    keys = list(keys)
    blocks = _blocks_per_stage(keys)
    counts = tuple(blocks.get(layer, 0) for layer in (1, 2, 3, 4))
    depth = _RESNET_DEPTHS.get(counts) or _RESNET_DEPTHS.get(counts[:3] + (3,) if not counts[3] else ())
    if depth is None:
        return None
    if any(k.startswith("fpn.top_blocks.p6.") for k in keys):
        name = f"R-{depth}-FPN-RETINANET"
    elif any(k.startswith("fpn.") for k in keys):
        name = f"R-{depth}-FPN"
    else:
        name = f"R-{depth}-C5" if counts[3] else f"R-{depth}-C4"
    return name if name in list_bodies() else None


def _backbone_keys(keys) -> list[str]:
    """A whole detector's ``backbone.*`` keys without the prefix (model-style backbone names)."""
    return [k[len(BACKBONE_PREFIX):] for k in keys if k.startswith(BACKBONE_PREFIX)]


def _head_groups(keys) -> set[str]:
    """The heads a detector's keys hold: ``rpn.head``, ``roi_heads.box``, ``roi_heads.mask`` ..."""
    return {".".join(k.split(".")[:2]) for k in keys
            if not k.startswith(BACKBONE_PREFIX) and "." in k and ".anchor_generator." not in k}


def _is_detector(model_keys) -> bool:
    return any(k.startswith(BACKBONE_PREFIX) for k in model_keys)


def model_name(model: nn.Module) -> str:
    """``R-50-FPN`` for a backbone, ``R-50-FPN detector`` for a whole detector, as errors name them."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        return f"{getattr(backbone, 'body_name', None) or 'its body'} detector"
    return getattr(model, "body_name", None) or "model"


def _looks_like(file_keys, model: nn.Module, model_keys) -> str:
    """``; it looks like a checkpoint for R-101-FPN`` (with DCN stages when they differ; for a
    detector also the heads only one side has), or ``""`` when the file looks like the model."""
    file_keys, model_keys = list(file_keys), list(model_keys)
    notes = []
    detector = _is_detector(model_keys)
    file_backbone = _backbone_keys(file_keys) if detector else file_keys
    model_backbone = _backbone_keys(model_keys) if detector else model_keys
    body = guess_body(file_backbone)
    inner = getattr(model, "backbone", model) if detector else model
    own = getattr(inner, "body_name", None) or guess_body(model_backbone)
    if body is not None and body != own:
        blocks = _blocks_per_stage(file_backbone)
        per_stage = "-".join(str(blocks[layer]) for layer in sorted(blocks))
        notes.append(f"it looks like a checkpoint for {body} ({per_stage} blocks per stage)")
    file_dcn, model_dcn = _dcn_stages(file_backbone), _dcn_stages(model_backbone)
    if file_dcn != model_dcn and file_backbone:
        notes.append(f"it has deformable convs in {', '.join(file_dcn) or 'no stage'}, the model in "
                     f"{', '.join(model_dcn) or 'no stage'} (MODEL.RESNETS.STAGE_WITH_DCN)")
    if detector:
        file_heads, model_heads = _head_groups(file_keys), _head_groups(model_keys)
        if file_heads - model_heads:
            notes.append(f"it has heads this config does not build: {', '.join(sorted(file_heads - model_heads))}")
        if model_heads - file_heads:
            lacking = ", ".join(sorted(model_heads - file_heads))
            notes.append(f"it has no {lacking} tensors" + (" (a backbone checkpoint?)" if not file_heads else ""))
    return "".join(f"; {note}" for note in notes)


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did with every model key and every file entry.

    Model keys: ``loaded`` (copied from the file), ``identity`` (FrozenBN running statistics set
    to 0 / 1 because C2 files have none), ``from_init`` (not in an ImageNet init file and trained
    from their initial values, see the module docstring), ``computed`` (a detector's cell anchors,
    absent from the file and computed from the config), ``missing`` (absent and required).
    File entries, by their name in the file: ``unexpected`` (maps to no model key), ``ignored``
    (deliberately unused: classifier, ``num_batches_tracked``, ``*_momentum``, non-tensor values),
    ``skipped`` (outside the backbone: detector heads, or a stage this body does not have).
    """

    path: str
    kind: str
    container: str
    loaded: list[str] = field(default_factory=list)
    identity: list[str] = field(default_factory=list)
    from_init: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was loaded from where, and the count of every other category."""
        total = len(self.loaded) + len(self.identity) + len(self.from_init) + len(self.computed) + len(self.missing)
        return (
            f"loaded {len(self.loaded)}/{total} tensors from {self.path} ({self.kind}, {self.container}): "
            f"{len(self.missing)} missing, {len(self.from_init)} trained from init, "
            f"{len(self.identity)} set to identity, "
            + (f"{len(self.computed)} computed from the config, " if self.computed else "")
            + f"{len(self.unexpected)} unexpected, "
            f"{len(self.ignored)} ignored, {len(self.skipped)} skipped"
            + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        )

    def format(self) -> str:
        """Several lines for people: the summary, then each non-empty category with a few names."""
        lines = [self.summary()]
        rows = (
            ("missing (left at their initial values)", self.missing),
            ("not in file (trained from init)", self.from_init),
            ("left at identity (not in C2 files)", self.identity),
            ("not in file (computed from the config)", self.computed),
            ("unexpected (match no model key)", self.unexpected),
            ("ignored", self.ignored),
        )
        lines += [f"  {title}: {len(keys)}: {_names(keys)}" for title, keys in rows if keys]
        if self.skipped:
            examples = _names(self.skipped, 3)
            lines.append(f"  skipped {len(self.skipped)} entries outside this backbone (e.g. {examples})")
        lines += [f"  warning: {text}" for text in self.warnings]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 8 + header_len <= size and head[8:9] == b"{"


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "something other than tensors and plain data"
            raise DeformRTError(f"refusing to load {path}: it asks to run {what}") from None
        raise DeformRTError(f"cannot read {path}: corrupt PyTorch file ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DeformRTError(f"cannot read {path}: corrupt or truncated PyTorch file ({_first_line(exc)})") from None


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise DeformRTError(f"cannot read {path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DeformRTError(f"cannot read {path}: corrupt safetensors file ({_first_line(exc)})") from None


def _read(path: Path) -> tuple[object, str]:
    """The file's top-level object and its container name ("pth (zip)", "pickle" ...)."""
    require_file(path, "checkpoint")
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(16)
            if not head:
                raise DeformRTError(f"cannot read {path}: the file is empty")
            if _looks_like_safetensors(head, size):
                return _safetensors_load(path), "safetensors"
            if head.startswith(_ZIP_MAGIC):
                return _torch_load(path), "pth (zip)"
            if not (head.startswith(_PICKLE_PROTO) or path.suffix == ".pkl"):
                raise DeformRTError(
                    f"cannot load {path}: not a PyTorch (.pth), safetensors or pickle (.pkl) checkpoint"
                )
            handle.seek(0)
            first = load_pickle(path, handle)
    except OSError as exc:
        raise DeformRTError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from None
    # A legacy (pre-zip) torch.save file starts with a pickled magic number; the rest of it goes
    # through torch's weights-only reader like any .pth.
    if isinstance(first, int) and first == torch.serialization.MAGIC_NUMBER:
        return _torch_load(path), "pth (legacy)"
    return first, "pickle"


# --------------------------------------------------------------------------------------------
# Naming schemes
# --------------------------------------------------------------------------------------------


@dataclass
class _Routes:
    """Where each file entry goes: ``targets`` file key -> model key (which may not exist)."""

    targets: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _first_present(model_keys: Mapping[str, object], *candidates: str) -> str:
    """The first candidate the model has, else the first (reported as unexpected)."""
    return next((c for c in candidates if c in model_keys), candidates[0])


def _conv_key(model_keys: Mapping[str, object], module: str, leaf: str) -> str:
    """A conv parameter of ``module``, wherever the model keeps it.

    ``X.weight`` plain, ``X.conv.weight`` for a deformable conv2, ``X.0.weight`` for an FPN conv
    wrapped with GN/ReLU in a Sequential.
    """
    return _first_present(model_keys, f"{module}.{leaf}", f"{module}.conv.{leaf}", f"{module}.0.{leaf}")


def _has_stage(model_keys: Mapping[str, object], key: str) -> bool:
    """False when ``key`` lies in a ``body.layerN`` the model does not have at all (C4 bodies)."""
    stage = re.match(r"body\.layer\d+\.", key)
    return stage is None or any(k.startswith(stage.group(0)) for k in model_keys)


def _route_maskrcnn_benchmark(keys: list[str], model_keys: Mapping[str, object]) -> _Routes:
    routes = _Routes()
    names = {key: _strip(key, "module.") for key in keys}
    detector = any(name.startswith("backbone.") for name in names.values())
    if any(k.startswith(BACKBONE_PREFIX) for k in model_keys):  # a whole detector: key for key
        for key, name in names.items():
            routes.targets[key] = name if detector else BACKBONE_PREFIX + name
        return routes
    for key, name in names.items():
        if name.startswith("backbone."):
            routes.targets[key] = name[len("backbone.") :]
        elif detector:
            routes.skipped.append(key)
        else:
            routes.targets[key] = name
    return routes


def _route_torchvision(keys: list[str], model_keys: Mapping[str, object]) -> _Routes:
    routes = _Routes()
    for key in keys:
        name = _strip(key, "module.")
        if name.startswith("fc.") or name.endswith(".num_batches_tracked"):
            routes.ignored.append(key)
            continue
        module, _, leaf = name.rpartition(".")
        if module in ("conv1", "bn1"):
            target = f"body.stem.{name}"
        elif module.startswith("layer") and module.endswith(".conv2"):
            target = _conv_key(model_keys, f"body.{module}", leaf)
        else:
            target = f"body.{name}"
        if _has_stage(model_keys, target):
            routes.targets[key] = target
        else:
            routes.skipped.append(key)
    return routes


_C2_BLOB = re.compile(r"(?P<module>.+?)_(?P<leaf>w|b|bn_s|bn_b|gn_s|gn_b)")
_C2_BLOCK = re.compile(r"res(?P<stage>[2-5])_(?P<block>\d+)_branch(?P<branch>1|2a|2b|2c)")
_C2_FPN = re.compile(r"fpn_(?P<inner>inner_)?res(?P<stage>[2-5])_(?P<block>\d+)_sum(?:_lateral)?")
_C2_FPN_EXTRA = re.compile(r"fpn_(?P<level>[67])")
_C2_CLASSIFIER = ("fc1000", "pred")
BACKBONE_PREFIX = "backbone."
# Detectron head blobs (after the "_w"/"_b" leaf) -> the module upstream's renames give them.
_C2_HEADS = (
    (re.compile(r"conv_rpn(?:_fpn2)?"), "rpn.head.conv"),
    (re.compile(r"rpn_cls_logits(?:_fpn2)?"), "rpn.head.cls_logits"),
    (re.compile(r"rpn_bbox_pred(?:_fpn2)?"), "rpn.head.bbox_pred"),
    (re.compile(r"fc(?P<n>[67])"), "roi_heads.box.feature_extractor.fc{n}"),
    (re.compile(r"cls_score"), "roi_heads.box.predictor.cls_score"),
    (re.compile(r"bbox_pred"), "roi_heads.box.predictor.bbox_pred"),
    (re.compile(r"_\[mask\]_fcn(?P<n>\d+)"), "roi_heads.mask.feature_extractor.mask_fcn{n}"),
    (re.compile(r"conv5_mask"), "roi_heads.mask.predictor.conv5_mask"),
    (re.compile(r"mask_fcn_logits"), "roi_heads.mask.predictor.mask_fcn_logits"),
)
_C4_HEAD = "roi_heads.box.feature_extractor.head."


def _c2_head_target(module: str, leaf: str, model_keys: Mapping[str, object]) -> str | None:
    """The detector key of a Detectron head blob (``module`` + ``_w``/``_b``), or None."""
    for pattern, target in _C2_HEADS:
        found = pattern.fullmatch(module)
        if found and leaf in ("w", "b"):
            return _conv_key(model_keys, target.format(**found.groupdict()), "weight" if leaf == "w" else "bias")
    return None


def _last_blocks(model_keys: Mapping[str, object]) -> dict[int, int]:
    """``{layer index: index of its last block}`` as the model has them."""
    last: dict[int, int] = {}
    for key in model_keys:
        found = re.match(r"body\.layer(\d+)\.(\d+)\.", key)
        if found:
            layer, block = int(found.group(1)), int(found.group(2))
            last[layer] = max(block, last.get(layer, 0))
    return last


def _c2_modules(module: str, last_blocks: dict[int, int], warnings: list[str]) -> tuple[str, str] | None:
    """(conv module, norm module) of a C2 blob prefix, or None if it is not a backbone blob."""
    if module in ("conv1", "res_conv1"):
        return "body.stem.conv1", "body.stem.bn1"
    block = _C2_BLOCK.fullmatch(module)
    if block:
        base = f"body.layer{int(block['stage']) - 1}.{int(block['block'])}"
        if block["branch"] == "1":
            return f"{base}.downsample.0", f"{base}.downsample.1"
        index = "abc".index(block["branch"][1]) + 1
        return f"{base}.conv{index}", f"{base}.bn{index}"
    fpn = _C2_FPN.fullmatch(module)
    if fpn:
        layer, index = int(fpn["stage"]) - 1, int(fpn["block"])
        if layer in last_blocks and last_blocks[layer] != index:
            warnings.append(
                f"FPN blob {module} follows block {index} of res{layer + 1}, but the model's res{layer + 1} "
                f"ends at block {last_blocks[layer]} (a checkpoint for another depth?)"
            )
        name = f"fpn.fpn_{'inner' if fpn['inner'] else 'layer'}{layer}"
        return name, f"{name}.1"
    extra = _C2_FPN_EXTRA.fullmatch(module)
    if extra:
        name = f"fpn.top_blocks.p{extra['level']}"
        return name, name
    return None


def _route_detectron_c2(keys: list[str], model_keys: Mapping[str, object]) -> _Routes:
    routes = _Routes()
    detector = any(k.startswith(BACKBONE_PREFIX) for k in model_keys)
    if detector:  # backbone blobs are routed against the backbone's own names, heads by _C2_HEADS
        backbone_keys = {k[len(BACKBONE_PREFIX):]: v for k, v in model_keys.items() if k.startswith(BACKBONE_PREFIX)}
        inner = _route_detectron_c2(keys, backbone_keys)
        routes.ignored, routes.warnings = inner.ignored, inner.warnings
        routes.targets = {k: BACKBONE_PREFIX + t for k, t in inner.targets.items()}
        res5 = {k[len(_C4_HEAD):]: v for k, v in model_keys.items() if k.startswith(_C4_HEAD)}
        for key in inner.skipped:
            blob = _C2_BLOB.fullmatch(key)
            target = _c2_head_target(blob["module"], blob["leaf"], model_keys) if blob else None
            if target is None and blob and res5 and blob["module"].startswith("res5_"):
                staged = _route_detectron_c2([key], {"body." + k: v for k, v in res5.items()}).targets
                target = _C4_HEAD + staged[key][len("body."):] if key in staged else None
            if target is None:
                routes.skipped.append(key)
            else:
                routes.targets[key] = target
        return routes
    last_blocks = _last_blocks(model_keys)
    for key in keys:
        blob = _C2_BLOB.fullmatch(key)
        if key.endswith("_momentum") or (blob and blob["module"] in _C2_CLASSIFIER):
            routes.ignored.append(key)
            continue
        modules = _c2_modules(blob["module"], last_blocks, routes.warnings) if blob else None
        if modules is None:
            routes.skipped.append(key)
            continue
        conv, norm = modules
        leaf = blob["leaf"]
        if leaf == "w":
            target = _conv_key(model_keys, conv, "weight")
        elif leaf == "b":
            target = _conv_key(model_keys, conv, "bias")
        else:
            target = f"{norm}.{'weight' if leaf.endswith('_s') else 'bias'}"
        if _has_stage(model_keys, target):
            routes.targets[key] = target
        else:
            routes.skipped.append(key)
    routes.warnings = list(dict.fromkeys(routes.warnings))  # one per FPN module, not per blob
    return routes


_ROUTERS = {
    MASKRCNN_BENCHMARK: _route_maskrcnn_benchmark,
    DETECTRON_C2: _route_detectron_c2,
    TORCHVISION: _route_torchvision,
}


def _state_and_kind(obj: object, path: Path, container: str) -> tuple[Mapping, str]:
    if not isinstance(obj, Mapping):
        raise DeformRTError(f"cannot load {path}: it holds a {type(obj).__name__}, not a dict of weights")
    if container == "pickle":
        if "__author__" in obj and "model" in obj:
            raise DeformRTError(f"cannot load {path}: detectron2 checkpoints are not supported (its names differ)")
        state = obj.get("blobs", obj)
        kind = DETECTRON_C2
    else:
        state = obj["model"] if isinstance(obj.get("model"), Mapping) else obj
        names = {_strip(str(k), "module.") for k in state}
        is_torchvision = "conv1.weight" in names and any(n.startswith("layer1.") for n in names)
        kind = TORCHVISION if is_torchvision else MASKRCNN_BENCHMARK
    if not isinstance(state, Mapping):
        raise DeformRTError(f"cannot load {path}: its 'blobs' entry is a {type(state).__name__}, not a dict")
    return state, kind


def _as_tensor(value: object) -> torch.Tensor | None:
    """A tensor for numeric tensors / numpy arrays / numpy scalars; None for anything else."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("=")))
    return None


def _stride_in_1x1(model: nn.Module, cfg: object | None) -> bool | None:
    """Whether the model's bottlenecks stride on the 1x1 conv: from ``cfg`` if given, else the model."""
    if cfg is not None:
        return bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1)
    try:
        conv1 = model.get_submodule("body.layer2.0.conv1")
    except AttributeError:
        return None
    return tuple(getattr(conv1, "stride", (1, 1))) != (1, 1)


def _aliases(state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Keys that name the same tensor (shared modules appear in ``state_dict()`` once per name)."""
    by_storage: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel():
            by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)
    return {name: [o for o in names if o != name] for names in by_storage.values() if len(names) > 1
            for name in names}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True, *,
                    cfg: object | None = None, allow_unexpected: bool = False) -> LoadReport:
    """Load the weights in ``path`` into ``model`` and account for every tensor.

    ``model`` is a backbone from :func:`models.build_backbone` (or any module with upstream's
    backbone keys) or a whole detector from :func:`models.build_detector`. ``cfg`` (optional) is the config it was built from; it is used to warn when
    torchvision weights meet ``STRIDE_IN_1X1=True``. See the module docstring for the formats,
    renames and the strict rule. Raises :class:`DeformRTError` (one line) for a missing,
    unreadable, corrupt or unsafe file, a shape mismatch or two entries for one key, and
    :class:`CheckpointMismatchError` (strict) for missing keys or, unless ``allow_unexpected``,
    unexpected entries (the module docstring says which entries count); the model is modified only
    when the load succeeds.
    """
    path = Path(path)
    obj, container = _read(path)
    state, kind = _state_and_kind(obj, path, container)
    model_state = model.state_dict()
    report = LoadReport(path=str(path), kind=kind, container=container)

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tensor = _as_tensor(value)
        if tensor is None:
            report.ignored.append(str(key))
        else:
            tensors[str(key)] = tensor
    if not tensors:
        raise DeformRTError(f"cannot load {path}: it holds no tensors")

    routes = _ROUTERS[kind](list(tensors), model_state)
    report.ignored += routes.ignored
    report.skipped = routes.skipped
    report.warnings = routes.warnings

    sources: dict[str, str] = {}  # model key -> file key
    mismatches: list[str] = []
    for key, target in routes.targets.items():
        if target not in model_state:
            report.unexpected.append(key)
            continue
        if target in sources:
            raise DeformRTError(f"cannot load {path}: both {sources[target]!r} and {key!r} map to {target}")
        sources[target] = key
        have, want = tuple(tensors[key].shape), tuple(model_state[target].shape)
        if have != want:
            via = "" if key == target else f" (from {key!r})"
            mismatches.append(f"{target}{via}: the checkpoint has {list(have)}, the model expects {list(want)}")
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise DeformRTError(f"cannot load {path}: shape mismatch for {mismatches[0]}{more}")

    init_file = kind in (DETECTRON_C2, TORCHVISION)
    file_has_fpn = any(target.startswith(("fpn.", BACKBONE_PREFIX + "fpn.")) for target in sources)
    aliases = _aliases(model_state)
    for name in model_state:
        if name in sources or any(other in sources for other in aliases.get(name, ())):
            report.loaded.append(name)
        elif ".anchor_generator.cell_anchors." in name:
            report.computed.append(name)
        elif kind == DETECTRON_C2 and name.endswith((".running_mean", ".running_var")):
            report.identity.append(name)
        elif init_file and (".offset." in name or (name.startswith(("fpn.", BACKBONE_PREFIX + "fpn."))
                                                   and not file_has_fpn)):
            report.from_init.append(name)
        else:
            report.missing.append(name)

    if kind == TORCHVISION and _stride_in_1x1(model, cfg):
        report.warnings.append(
            "torchvision weights put the stride on the 3x3 conv, but this model strides in the 1x1 conv: "
            "build it with MODEL.RESNETS.STRIDE_IN_1X1 False"
        )
    if strict and report.missing:
        raise CheckpointMismatchError(
            f"cannot load {path} strictly: {len(report.missing)} model tensor(s) are not in it: "
            f"{_names(report.missing)}{_looks_like(routes.targets.values(), model, model_state)}", "missing")
    if strict and report.unexpected and not allow_unexpected:
        targets = [routes.targets[key] for key in report.unexpected]
        what = "tensor(s)" if _is_detector(model_state) else "backbone tensor(s)"
        raise CheckpointMismatchError(
            f"cannot load {path}: {len(targets)} {what} in it match nothing in this {model_name(model)}: "
            f"{_names(targets)}{_looks_like(routes.targets.values(), model, model_state)}", "unexpected")

    with torch.no_grad():
        for target, key in sources.items():
            model_state[target].copy_(tensors[key])
        for name in report.identity:
            model_state[name].fill_(0.0 if name.endswith(".running_mean") else 1.0)
    return report
