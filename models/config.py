"""maskrcnn-benchmark's backbone configuration: defaults, presets, YAML files and ``KEY VALUE`` opts.

:func:`get_cfg` returns a frozen :class:`CfgNode` holding upstream's keys and defaults for
MODEL.BACKBONE, MODEL.RESNETS, MODEL.FPN, MODEL.GROUP_NORM, MODEL.RETINANET.USE_C5,
INPUT.PIXEL_MEAN / PIXEL_STD / TO_BGR255 and DATALOADER.SIZE_DIVISIBILITY. Values are decoded and
type-checked like yacs (strings go through ``ast.literal_eval``; lists and tuples convert to the
default's kind), a little more leniently: an int is accepted for a float key. Every problem is a
one-line :class:`~models.errors.DeformRTError` naming the key.
"""

from __future__ import annotations

import ast
import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import yaml

from models.backbone import BodySpec  # importing models.backbone also fills the registries
from models.errors import DeformRTError, require_file
from models.registry import BACKBONES, BLOCKS, STEMS, did_you_mean

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

_DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "BACKBONE": {"CONV_BODY": "R-50-C4", "FREEZE_CONV_BODY_AT": 2},
        "RESNETS": {
            "NUM_GROUPS": 1,
            "WIDTH_PER_GROUP": 64,
            "STRIDE_IN_1X1": True,
            "TRANS_FUNC": "BottleneckWithFixedBatchNorm",
            "STEM_FUNC": "StemWithFixedBatchNorm",
            "RES5_DILATION": 1,
            "BACKBONE_OUT_CHANNELS": 1024,
            "RES2_OUT_CHANNELS": 256,
            "STEM_OUT_CHANNELS": 64,
            "STAGE_WITH_DCN": (False, False, False, False),
            "WITH_MODULATED_DCN": False,
            "DEFORMABLE_GROUPS": 1,
        },
        "FPN": {"USE_GN": False, "USE_RELU": False},
        "GROUP_NORM": {"DIM_PER_GP": -1, "NUM_GROUPS": 32, "EPSILON": 1e-5},
        "RETINANET": {"USE_C5": True},
    },
    "INPUT": {"PIXEL_MEAN": [102.9801, 115.9465, 122.7717], "PIXEL_STD": [1.0, 1.0, 1.0], "TO_BGR255": True},
    "DATALOADER": {"SIZE_DIVISIBILITY": 0},
}

# What a whole-detector config adds (``get_cfg(..., detector=True)``): upstream's inference keys, and
# the training keys of the same sections (accepted so upstream's files load; they change nothing here).
_DETECTOR_DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "META_ARCHITECTURE": "GeneralizedRCNN",
        "RPN_ONLY": False,
        "MASK_ON": False,
        "RETINANET_ON": False,
        "KEYPOINT_ON": False,
        "CLS_AGNOSTIC_BBOX_REG": False,
        "RPN": {
            "USE_FPN": False,
            "ANCHOR_SIZES": (32, 64, 128, 256, 512),
            "ANCHOR_STRIDE": (16,),
            "ASPECT_RATIOS": (0.5, 1.0, 2.0),
            "STRADDLE_THRESH": 0,
            "FG_IOU_THRESHOLD": 0.7,
            "BG_IOU_THRESHOLD": 0.3,
            "BATCH_SIZE_PER_IMAGE": 256,
            "POSITIVE_FRACTION": 0.5,
            "PRE_NMS_TOP_N_TRAIN": 12000,
            "PRE_NMS_TOP_N_TEST": 6000,
            "POST_NMS_TOP_N_TRAIN": 2000,
            "POST_NMS_TOP_N_TEST": 1000,
            "NMS_THRESH": 0.7,
            "MIN_SIZE": 0,
            "FPN_POST_NMS_TOP_N_TRAIN": 2000,
            "FPN_POST_NMS_TOP_N_TEST": 2000,
            "FPN_POST_NMS_PER_BATCH": True,
            "RPN_HEAD": "SingleConvRPNHead",
        },
        "ROI_HEADS": {
            "USE_FPN": False,
            "FG_IOU_THRESHOLD": 0.5,
            "BG_IOU_THRESHOLD": 0.5,
            "BBOX_REG_WEIGHTS": (10.0, 10.0, 5.0, 5.0),
            "BATCH_SIZE_PER_IMAGE": 512,
            "POSITIVE_FRACTION": 0.25,
            "SCORE_THRESH": 0.05,
            "NMS": 0.5,
            "DETECTIONS_PER_IMG": 100,
        },
        "ROI_BOX_HEAD": {
            "FEATURE_EXTRACTOR": "ResNet50Conv5ROIFeatureExtractor",
            "PREDICTOR": "FastRCNNPredictor",
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_SCALES": (1.0 / 16,),
            "NUM_CLASSES": 81,
            "MLP_HEAD_DIM": 1024,
            "USE_GN": False,
            "DILATION": 1,
            "CONV_HEAD_DIM": 256,
            "NUM_STACKED_CONVS": 4,
        },
        "ROI_MASK_HEAD": {
            "FEATURE_EXTRACTOR": "ResNet50Conv5ROIFeatureExtractor",
            "PREDICTOR": "MaskRCNNC4Predictor",
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_SCALES": (1.0 / 16,),
            "MLP_HEAD_DIM": 1024,
            "CONV_LAYERS": (256, 256, 256, 256),
            "RESOLUTION": 14,
            "SHARE_BOX_FEATURE_EXTRACTOR": True,
            "POSTPROCESS_MASKS": False,
            "POSTPROCESS_MASKS_THRESHOLD": 0.5,
            "DILATION": 1,
            "USE_GN": False,
        },
        "RETINANET": {
            "NUM_CLASSES": 81,
            "ANCHOR_SIZES": (32, 64, 128, 256, 512),
            "ASPECT_RATIOS": (0.5, 1.0, 2.0),
            "ANCHOR_STRIDES": (8, 16, 32, 64, 128),
            "STRADDLE_THRESH": 0,
            "OCTAVE": 2.0,
            "SCALES_PER_OCTAVE": 3,
            "USE_C5": True,
            "NUM_CONVS": 4,
            "BBOX_REG_WEIGHT": 4.0,
            "BBOX_REG_BETA": 0.11,
            "PRE_NMS_TOP_N": 1000,
            "FG_IOU_THRESHOLD": 0.5,
            "BG_IOU_THRESHOLD": 0.4,
            "LOSS_ALPHA": 0.25,
            "LOSS_GAMMA": 2.0,
            "PRIOR_PROB": 0.01,
            "INFERENCE_TH": 0.05,
            "NMS_TH": 0.4,
        },
    },
    "INPUT": {"MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333},
    "TEST": {"DETECTIONS_PER_IMG": 100, "BBOX_AUG": {"ENABLED": False}},
}

# Tuple keys whose length is the user's choice (checked against each other in _validate_detector).
_VARIABLE_LENGTH_KEYS = frozenset({
    "MODEL.RPN.ANCHOR_SIZES", "MODEL.RPN.ANCHOR_STRIDE", "MODEL.RPN.ASPECT_RATIOS",
    "MODEL.ROI_BOX_HEAD.POOLER_SCALES", "MODEL.ROI_MASK_HEAD.POOLER_SCALES", "MODEL.ROI_MASK_HEAD.CONV_LAYERS",
    "MODEL.RETINANET.ANCHOR_SIZES", "MODEL.RETINANET.ASPECT_RATIOS", "MODEL.RETINANET.ANCHOR_STRIDES",
})

# Sections whose every key is ours: an unknown key there is a typo, so an error. In the other
# sections (the root, MODEL, MODEL.RETINANET, INPUT, DATALOADER) a config file's other keys belong
# to the rest of the detector and are ignored.
_STRICT_SECTIONS = frozenset({"MODEL.BACKBONE", "MODEL.RESNETS", "MODEL.FPN", "MODEL.GROUP_NORM"})
_DETECTOR_STRICT_SECTIONS = _STRICT_SECTIONS | {"MODEL.RPN", "MODEL.ROI_HEADS", "MODEL.ROI_BOX_HEAD",
                                                "MODEL.ROI_MASK_HEAD", "MODEL.RETINANET"}

_BACKBONE_KEYS_HINT = ("MODEL.BACKBONE.*, MODEL.RESNETS.*, MODEL.FPN.*, MODEL.GROUP_NORM.*, MODEL.RETINANET.USE_C5, "
                       "INPUT.PIXEL_MEAN/PIXEL_STD/TO_BGR255, DATALOADER.SIZE_DIVISIBILITY")

# MODEL.RESNETS keys that must be >= 1.
_POSITIVE_RESNETS_KEYS = ("NUM_GROUPS", "WIDTH_PER_GROUP", "RES5_DILATION", "BACKBONE_OUT_CHANNELS",
                          "RES2_OUT_CHANNELS", "STEM_OUT_CHANNELS", "DEFORMABLE_GROUPS")


class CfgNode(Mapping):
    """A small yacs-like config node: a mapping with attribute access that can be frozen.

    Nested mappings become CfgNodes. ``freeze()`` makes the whole tree read-only (setting a
    key then raises AttributeError). ``to_dict()`` gives plain nested dicts and ``dump()`` a
    YAML string that :func:`get_cfg` reads back to an equal config.
    """

    def __init__(self, init: Optional[Mapping] = None):
        object.__setattr__(self, "_data", {})
        object.__setattr__(self, "_frozen", False)
        for key, value in (init or {}).items():
            self[key] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(f"config is frozen; cannot set {key!r}")
        self._data[key] = CfgNode(value) if isinstance(value, Mapping) else value

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"CfgNode({self.to_dict()!r})"

    def freeze(self) -> "CfgNode":
        """Make this node and all nodes below it read-only; returns self."""
        object.__setattr__(self, "_frozen", True)
        for value in self._data.values():
            if isinstance(value, CfgNode):
                value.freeze()
        return self

    def is_frozen(self) -> bool:
        return self._frozen

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (lists and tuples copied, kinds kept)."""
        return {k: v.to_dict() if isinstance(v, CfgNode) else copy.copy(v) for k, v in self._data.items()}

    def dump(self) -> str:
        """The config as a YAML string (sequences in flow style; tuples read back as tuples)."""
        return yaml.dump(self.to_dict(), Dumper=_FlowSequenceDumper, sort_keys=False)


class _FlowSequenceDumper(yaml.SafeDumper):
    """Safe YAML with sections as blocks and lists/tuples as ``[a, b]`` lists."""


def _represent_sequence(dumper: yaml.SafeDumper, value: Any) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", list(value), flow_style=True)


_FlowSequenceDumper.add_representer(list, _represent_sequence)
_FlowSequenceDumper.add_representer(tuple, _represent_sequence)


# ------------------------------------------------------------------------------------------------
# Value decoding and type checks


def _decode(value: Any) -> Any:
    """yacs's rule: a string that is a Python literal becomes that literal; other strings stay."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


_KIND_NAMES = {bool: ("a boolean (True/False)", "booleans"), int: ("an integer", "integers"),
               float: ("a number", "numbers"), str: ("a string", "strings")}


def _describe(default: Any, variable_length: bool = False) -> str:
    if isinstance(default, (list, tuple)) and variable_length:
        return f"a {type(default).__name__} of {_KIND_NAMES[type(default[0])][1]}"
    if isinstance(default, (list, tuple)):
        return f"a {type(default).__name__} of {len(default)} {_KIND_NAMES[type(default[0])][1]}"
    return _KIND_NAMES[type(default)][0]


def _coerce_scalar(value: Any, default: Any) -> Any:
    """``value`` converted to ``default``'s type, or raise TypeError."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    raise TypeError


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Decode ``value`` and check it against ``default`` (type, and length for sequences)."""
    decoded = _decode(value)
    variable = key in _VARIABLE_LENGTH_KEYS
    try:
        if isinstance(default, (list, tuple)):
            if not isinstance(decoded, (list, tuple)) or not decoded or (len(decoded) != len(default)
                                                                         and not variable):
                raise TypeError
            return type(default)(_coerce_scalar(v, default[0]) for v in decoded)
        return _coerce_scalar(decoded, default)
    except TypeError:
        raise DeformRTError(f"{key}: expected {_describe(default, variable)}, got {value!r}") from None


# ------------------------------------------------------------------------------------------------
# Merging


def _leaf_keys(tree: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.extend(_leaf_keys(v, f"{prefix}{k}.") if isinstance(v, Mapping) else [prefix + k])
    return keys


def _merge_file(tree: dict, data: Mapping, prefix: str, ignored: list[str], source: str,
                strict_sections: frozenset = _STRICT_SECTIONS) -> None:
    """Merge a YAML mapping into ``tree`` (the defaults' shape); unrelated keys go to ``ignored``."""
    section = prefix.rstrip(".")
    for raw_key, value in data.items():
        key = str(raw_key)
        path = prefix + key
        if key not in tree:
            if section in strict_sections:
                hint = did_you_mean(path, [prefix + k for k in tree])
                raise DeformRTError(f"{source}: unknown key {path}{hint}")
            ignored.append(path)
        elif isinstance(tree[key], dict):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise DeformRTError(f"{source}: {path} is a section, but the file gives it the value {value!r}")
            _merge_file(tree[key], value, path + ".", ignored, source, strict_sections)
        elif isinstance(value, Mapping):
            raise DeformRTError(f"{source}: {path} is a key, but the file gives it a section")
        else:
            try:
                tree[key] = _coerce(path, value, tree[key])
            except DeformRTError as exc:
                raise DeformRTError(f"{source}: {exc}") from None


def _set_opt(tree: dict, key: str, value: Any) -> None:
    """Set one ``KEY VALUE`` override; the key must be one of ours."""
    node: Any = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            hint = did_you_mean(key, _leaf_keys(tree)) or f"; the backbone keys are {_BACKBONE_KEYS_HINT}"
            raise DeformRTError(f"unknown config key {key!r}{hint}")
        if i < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    if isinstance(node[leaf], dict):
        example = next(iter(_leaf_keys(node[leaf], key + ".")))
        raise DeformRTError(f"{key} is a config section, not a key; set one of its keys, e.g. {example}")
    node[leaf] = _coerce(key, value, node[leaf])


def _pairs(opts: Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(opts, (str, bytes)) or not isinstance(opts, Sequence):
        raise DeformRTError(f"opts must be a list of KEY VALUE items, got {opts!r}")
    if len(opts) % 2:
        raise DeformRTError(f"config overrides must be KEY VALUE pairs, got an odd number of items ({len(opts)}): "
                            f"{' '.join(map(str, opts))}")
    pairs = list(zip(opts[0::2], opts[1::2]))
    for key, _ in pairs:
        if not isinstance(key, str):
            raise DeformRTError(f"opts: a key must be a string like MODEL.RESNETS.NUM_GROUPS, got {key!r}")
    return pairs


# ------------------------------------------------------------------------------------------------
# Files


def bundled_configs() -> list[str]:
    """Names of the sample configs shipped in ``models/configs`` (usable as ``config_file``)."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_file(config_file: Union[str, Path]) -> Path:
    """``config_file`` if it exists, else the bundled config of that name (``.yaml`` optional)."""
    path = Path(config_file)
    if path.is_file():
        return path
    if path.is_dir():
        require_file(path, "config file")  # names the directory
    for candidate in (CONFIG_DIR / path.name, CONFIG_DIR / f"{path.name}.yaml"):
        if path.parent == Path(".") and candidate.is_file():
            return candidate
    raise DeformRTError(f"config file {str(config_file)!r} not found (bundled configs: {', '.join(bundled_configs())})")


def _read_yaml(path: Path) -> Mapping:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeformRTError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DeformRTError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise DeformRTError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------
# Presets and validation


def _apply_preset(tree: dict, spec: BodySpec) -> None:
    """What every upstream config of this kind of body sets: FPN bodies use 256 channels and pad
    inputs to multiples of 32; C4/C5 bodies keep the defaults."""
    fpn = spec.has_fpn
    tree["MODEL"]["RESNETS"]["BACKBONE_OUT_CHANNELS"] = 256 if fpn else _DEFAULTS["MODEL"]["RESNETS"][
        "BACKBONE_OUT_CHANNELS"]
    tree["DATALOADER"]["SIZE_DIVISIBILITY"] = 32 if fpn else _DEFAULTS["DATALOADER"]["SIZE_DIVISIBILITY"]


def _check_group_norm(tree: dict, spec: BodySpec) -> None:
    gn, r = tree["MODEL"]["GROUP_NORM"], tree["MODEL"]["RESNETS"]
    dim, groups = gn["DIM_PER_GP"], gn["NUM_GROUPS"]
    if (dim == -1) == (groups == -1) or (dim != -1 and dim <= 0) or (groups != -1 and groups <= 0):
        raise DeformRTError(
            f"MODEL.GROUP_NORM.DIM_PER_GP={dim} and MODEL.GROUP_NORM.NUM_GROUPS={groups}: exactly one must be -1 "
            "and the other positive (upstream's group_norm uses NUM_GROUPS groups when DIM_PER_GP is -1, "
            "else C / DIM_PER_GP)")
    if gn["EPSILON"] <= 0:
        raise DeformRTError(f"MODEL.GROUP_NORM.EPSILON must be > 0, got {gn['EPSILON']}")
    # Every channel count that a GroupNorm will normalise (GN and FrozenBN may be mixed between the
    # stem, the blocks and the FPN: upstream allows any combination).
    users: list[tuple[str, int]] = []
    if r["STEM_FUNC"] == "StemWithGN":
        users.append(("MODEL.RESNETS.STEM_OUT_CHANNELS", r["STEM_OUT_CHANNELS"]))
    if r["TRANS_FUNC"] == "BottleneckWithGN":
        for i in range(len(spec.block_counts)):
            users.append((f"the res{i + 2} bottleneck (NUM_GROUPS * WIDTH_PER_GROUP * {2 ** i})",
                          r["NUM_GROUPS"] * r["WIDTH_PER_GROUP"] * 2 ** i))
            users.append((f"the res{i + 2} output (RES2_OUT_CHANNELS * {2 ** i})", r["RES2_OUT_CHANNELS"] * 2 ** i))
    if spec.has_fpn and tree["MODEL"]["FPN"]["USE_GN"]:
        users.append(("MODEL.RESNETS.BACKBONE_OUT_CHANNELS (FPN with USE_GN)", r["BACKBONE_OUT_CHANNELS"]))
    key, divisor = ("DIM_PER_GP", dim) if dim != -1 else ("NUM_GROUPS", groups)
    for where, channels in users:
        if channels % divisor:
            raise DeformRTError(f"MODEL.GROUP_NORM.{key}={divisor} does not divide the {channels} channels of {where}")


def _validate(tree: dict) -> None:
    """Checks that need more than one key, or a registry."""
    r, backbone = tree["MODEL"]["RESNETS"], tree["MODEL"]["BACKBONE"]
    spec: BodySpec = BACKBONES.get(backbone["CONV_BODY"])
    STEMS.get(r["STEM_FUNC"])
    BLOCKS.get(r["TRANS_FUNC"])
    for name in _POSITIVE_RESNETS_KEYS:
        if r[name] < 1:
            raise DeformRTError(f"MODEL.RESNETS.{name} must be >= 1, got {r[name]}")
    parts = 1 + len(spec.block_counts)
    if backbone["FREEZE_CONV_BODY_AT"] > parts:
        raise DeformRTError(
            f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT={backbone['FREEZE_CONV_BODY_AT']} is out of range for "
            f"{backbone['CONV_BODY']}: it freezes the stem and the first stages, and this body has {parts} parts "
            f"(stem, layer1..layer{parts - 1}); use at most {parts} (0 or less freezes nothing)")
    dg = r["DEFORMABLE_GROUPS"]
    for i, on in enumerate(r["STAGE_WITH_DCN"][: len(spec.block_counts)]):
        width = r["NUM_GROUPS"] * r["WIDTH_PER_GROUP"] * 2 ** i
        if on and width % dg:
            raise DeformRTError(f"MODEL.RESNETS.DEFORMABLE_GROUPS={dg} does not divide the {width} channels of the "
                                f"res{i + 2} 3x3 conv (STAGE_WITH_DCN is set for it)")
    _check_group_norm(tree, spec)
    if tree["DATALOADER"]["SIZE_DIVISIBILITY"] < 0:
        raise DeformRTError(f"DATALOADER.SIZE_DIVISIBILITY must be >= 0, got {tree['DATALOADER']['SIZE_DIVISIBILITY']}")
    if any(s == 0 for s in tree["INPUT"]["PIXEL_STD"]):
        raise DeformRTError(f"INPUT.PIXEL_STD must not contain 0, got {tree['INPUT']['PIXEL_STD']}")


def _merge_defaults(tree: dict, extra: Mapping) -> None:
    """Add ``extra``'s sections and keys to ``tree`` (existing keys keep their values)."""
    for key, value in extra.items():
        if isinstance(value, Mapping):
            _merge_defaults(tree.setdefault(key, {}), value)
        else:
            tree.setdefault(key, copy.deepcopy(value))


def _validate_detector(tree: dict) -> None:
    """Checks of the whole-detector keys that need more than one key (registry names of heads are
    checked when the detector is built)."""
    m = tree["MODEL"]
    spec: BodySpec = BACKBONES.get(m["BACKBONE"]["CONV_BODY"])
    levels = len(spec.outputs()[0]) if spec.has_fpn else 1
    if m["META_ARCHITECTURE"] != "GeneralizedRCNN":
        raise DeformRTError(f"MODEL.META_ARCHITECTURE {m['META_ARCHITECTURE']!r} is not supported; deformrt exports "
                            "upstream's GeneralizedRCNN")
    if m["KEYPOINT_ON"]:
        raise DeformRTError("keypoint heads are not supported (MODEL.KEYPOINT_ON True): deformrt exports RPN-only, "
                            "Faster R-CNN, Mask R-CNN and RetinaNet; set MODEL.KEYPOINT_ON False to export the rest")
    if tree["TEST"]["BBOX_AUG"]["ENABLED"]:
        raise DeformRTError("TEST.BBOX_AUG.ENABLED True: test-time augmentation runs several models outside the "
                            "detector and is not exported; set it to False")
    if m["MASK_ON"] and (m["RPN_ONLY"] or m["RETINANET_ON"]):
        raise DeformRTError("MODEL.MASK_ON True needs box detections: it cannot be combined with MODEL.RPN_ONLY or "
                            "MODEL.RETINANET_ON")
    if m["RESNETS"]["RES5_DILATION"] != 1:
        raise DeformRTError(f"MODEL.RESNETS.RES5_DILATION={m['RESNETS']['RES5_DILATION']} is not supported (no "
                            "upstream config uses it); use 1")
    if m["RETINANET_ON"]:
        r = m["RETINANET"]
        if spec.kind != "RETINANET":
            raise DeformRTError(f"MODEL.RETINANET_ON needs a RetinaNet body (R-50-FPN-RETINANET, R-101-FPN-RETINANET), "
                                f"got MODEL.BACKBONE.CONV_BODY {m['BACKBONE']['CONV_BODY']!r}")
        if not len(r["ANCHOR_STRIDES"]) == len(r["ANCHOR_SIZES"]) == levels:
            raise DeformRTError(f"MODEL.RETINANET.ANCHOR_STRIDES and ANCHOR_SIZES need one entry per pyramid level "
                                f"({levels}), got {len(r['ANCHOR_STRIDES'])} and {len(r['ANCHOR_SIZES'])}")
        if r["NUM_CLASSES"] < 2:
            raise DeformRTError(f"MODEL.RETINANET.NUM_CLASSES must be >= 2 (background included), got {r['NUM_CLASSES']}")
        return
    rpn = m["RPN"]
    if rpn["USE_FPN"] != spec.has_fpn or m["ROI_HEADS"]["USE_FPN"] != spec.has_fpn and not m["RPN_ONLY"]:
        raise DeformRTError(f"MODEL.RPN.USE_FPN / MODEL.ROI_HEADS.USE_FPN must be {spec.has_fpn} for "
                            f"{m['BACKBONE']['CONV_BODY']}")
    strides = len(rpn["ANCHOR_STRIDE"])
    if spec.has_fpn and not strides == len(rpn["ANCHOR_SIZES"]) == levels:
        raise DeformRTError(f"MODEL.RPN.ANCHOR_STRIDE and ANCHOR_SIZES need one entry per FPN level ({levels}), got "
                            f"{strides} and {len(rpn['ANCHOR_SIZES'])}")
    if not spec.has_fpn and strides != 1:
        raise DeformRTError(f"MODEL.RPN.ANCHOR_STRIDE must have one entry for {m['BACKBONE']['CONV_BODY']}, got {strides}")
    if m["ROI_BOX_HEAD"]["NUM_CLASSES"] < 2:
        raise DeformRTError(f"MODEL.ROI_BOX_HEAD.NUM_CLASSES must be >= 2 (background included), got "
                            f"{m['ROI_BOX_HEAD']['NUM_CLASSES']}")
    for head in ("ROI_BOX_HEAD", "ROI_MASK_HEAD"):
        scales = m[head]["POOLER_SCALES"]
        want = levels - 1 if spec.has_fpn else 1  # FPN heads pool P2-P5, not P6
        if (head == "ROI_BOX_HEAD" and not m["RPN_ONLY"]) or (head == "ROI_MASK_HEAD" and m["MASK_ON"]):
            if len(scales) != want:
                raise DeformRTError(f"MODEL.{head}.POOLER_SCALES needs {want} entr{'y' if want == 1 else 'ies'} for "
                                    f"{m['BACKBONE']['CONV_BODY']}, got {tuple(scales)}")


def default_conv_body() -> str:
    """Upstream's default MODEL.BACKBONE.CONV_BODY (what a config file that sets none builds)."""
    return _DEFAULTS["MODEL"]["BACKBONE"]["CONV_BODY"]


def config_from_yaml(text: str, detector: bool = False) -> CfgNode:
    """:func:`get_cfg` of a config given as YAML text (an export's ``deformrt.config``, a dump of the
    full config), read back as a config file."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="deformrt-cfg-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return get_cfg(config_file=str(path), detector=detector)


def config_file_body(config_file: Union[str, Path]) -> Optional[str]:
    """The MODEL.BACKBONE.CONV_BODY a config file sets, or None when it sets none."""
    path = resolve_config_file(config_file)
    data = _read_yaml(path)
    section = data
    for key in ("MODEL", "BACKBONE"):
        section = section.get(key) if isinstance(section, Mapping) else None
    body = section.get("CONV_BODY") if isinstance(section, Mapping) else None
    return None if body is None else str(body)


def get_cfg(conv_body: Optional[str] = None, config_file: Union[str, Path, None] = None,
            opts: Sequence[Any] = (), detector: bool = False) -> CfgNode:
    """The backbone config, frozen: upstream's defaults, then ``config_file``, then the
    ``conv_body`` preset, then ``opts``.

    - ``config_file``: a maskrcnn-benchmark YAML file (or the name of a bundled sample config).
      Keys of the backbone sections are merged and checked; the rest of the detector's config
      (MODEL.RPN, SOLVER, DATASETS, INPUT.MIN_SIZE_TRAIN, ...) is ignored and listed in one
      logged warning. An unknown key inside MODEL.BACKBONE/RESNETS/FPN/GROUP_NORM is an error.
    - ``conv_body``: a registry name; sets CONV_BODY and its preset (FPN bodies:
      BACKBONE_OUT_CHANNELS 256 and DATALOADER.SIZE_DIVISIBILITY 32, as upstream's FPN configs;
      other bodies: the defaults 1024 and 0).
    - ``opts``: flat ``KEY VALUE`` items; values as yacs parses them (``"(False, True, True, True)"``,
      ``"True"``, ``"'StemWithGN'"`` or ``"StemWithGN"``, ``"32"``) or Python values. Keys must be
      backbone keys.

    GN and FrozenBN may be mixed (e.g. BottleneckWithGN with StemWithFixedBatchNorm), as upstream
    allows; RES5_DILATION is kept but only matters for upstream's C4 box head.

    ``detector=True`` gives the whole detector's config: the backbone's keys plus upstream's
    MODEL.RPN / ROI_HEADS / ROI_BOX_HEAD / ROI_MASK_HEAD / RETINANET sections (all strict), the
    meta-architecture switches (RPN_ONLY, MASK_ON, RETINANET_ON, KEYPOINT_ON, CLS_AGNOSTIC_BBOX_REG),
    INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST and TEST.DETECTIONS_PER_IMG / BBOX_AUG.ENABLED, with upstream's
    defaults, checked together (a keypoint config is an error naming MODEL.KEYPOINT_ON).
    """
    tree = copy.deepcopy(_DEFAULTS)
    strict = _STRICT_SECTIONS
    if detector:
        _merge_defaults(tree, _DETECTOR_DEFAULTS)
        strict = _DETECTOR_STRICT_SECTIONS
    if config_file is not None:
        path = resolve_config_file(config_file)
        ignored: list[str] = []
        _merge_file(tree, _read_yaml(path), "", ignored, f"config file {path.name}", strict)
        if ignored:
            what = "the detector's inference" if detector else "the backbone"
            logger.warning("config file %s: ignoring keys unrelated to %s: %s", path.name, what, ", ".join(ignored))
    if conv_body is not None:
        _apply_preset(tree, BACKBONES.get(conv_body))
        tree["MODEL"]["BACKBONE"]["CONV_BODY"] = conv_body
    for key, value in _pairs(opts):
        _set_opt(tree, key, value)
    _validate(tree)
    if detector:
        _validate_detector(tree)
    return CfgNode(tree).freeze()
