"""Synthetic checkpoints in upstream's on-disk formats, for tests/test_checkpoint.py.

The converters here go *from* the model's state-dict keys *to* the names each format uses,
written from the fact sheet (docs/maskrcnn-benchmark-facts.md, section 5) independently of the
loader's renaming code, which goes the other way. The per-depth last-block indices of the FPN
blob names are spelled out here rather than derived from the model.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Index of the last block of res2..res5 in Detectron's FPN blob names, per ResNet depth.
LAST_BLOCKS = {"R-50": (2, 3, 5, 2), "R-101": (2, 3, 22, 2), "R-152": (2, 7, 35, 2)}

# Entries a whole maskrcnn-benchmark detector checkpoint has outside its backbone.
DETECTOR_EXTRAS = {
    "rpn.head.conv.weight": (4, 4, 3, 3),
    "rpn.head.cls_logits.bias": (3,),
    "roi_heads.box.feature_extractor.fc6.weight": (8, 16),
    "roi_heads.box.predictor.cls_score.weight": (81, 8),
}

# Blobs of a Detectron detector (model_final.pkl) outside the backbone.
C2_DETECTOR_EXTRAS = {"conv_rpn_fpn2_w": (4, 4, 3, 3), "rpn_bbox_pred_fpn2_b": (12,), "cls_score_w": (81, 8)}


def randomize_(model: nn.Module, seed: int, *, identity_stats: bool = False) -> nn.Module:
    """Fill every parameter and buffer of ``model`` with random values of a sane scale.

    Conv weights ~ N(0, 1/fan_in), norm scales in [0.5, 1.5], biases and running means ~ N(0, 0.1),
    running variances in [0.5, 2]. ``identity_stats`` keeps running_mean / running_var at 0 / 1
    (what a network converted from Caffe2 has).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                tensor.zero_() if identity_stats else tensor.normal_(0.0, 0.1, generator=gen)
            elif leaf == "running_var":
                tensor.fill_(1.0) if identity_stats else tensor.uniform_(0.5, 2.0, generator=gen)
            elif tensor.dim() > 1:
                tensor.normal_(0.0, tensor[0].numel() ** -0.5, generator=gen)
            elif leaf == "weight":
                tensor.uniform_(0.5, 1.5, generator=gen)
            else:
                tensor.normal_(0.0, 0.1, generator=gen)
    return model


def _c2_leaf(leaf: str) -> str:
    return {"weight": "s", "bias": "b"}[leaf]


def c2_blob_name(key: str, last_blocks: tuple[int, ...], *, gn: bool = False, top_level: int = 4) -> str | None:
    """The Detectron blob name of a model key, or None for keys C2 files never hold.

    ``last_blocks``: the last block index of res2..res5 (see LAST_BLOCKS). ``gn``: the body uses
    GroupNorm (``_gn_s/_gn_b`` blobs, ``conv1_gn_*`` stem). ``top_level``: the highest
    ``fpn_inner`` index (the one fed by res5, without ``_lateral``).
    """
    parts = key.split(".")
    leaf = parts[-1]
    if leaf in ("running_mean", "running_var") or "offset" in parts:
        return None
    norm = "_gn_" if gn else "_bn_"
    if parts[:2] == ["body", "stem"]:
        if parts[2] == "conv1":
            return "conv1_w"
        return ("conv1_gn_" if gn else "res_conv1_bn_") + _c2_leaf(leaf)
    if parts[0] == "body":
        prefix = f"res{int(parts[1][len('layer'):]) + 1}_{parts[2]}_"
        module = parts[3]
        if module == "downsample":
            return prefix + "branch1" + (norm + _c2_leaf(leaf) if parts[4] == "1" else "_w")
        branch = "branch2" + "abc"[int(module[-1]) - 1]
        return prefix + branch + (norm + _c2_leaf(leaf) if module.startswith("bn") else "_w")
    if parts[1] == "top_blocks":
        return f"fpn_{parts[2][1:]}_{leaf[0]}"
    level = int(parts[1][-1])
    stage = level + 1
    if parts[1].startswith("fpn_inner"):
        base = f"fpn_inner_res{stage}_{last_blocks[level - 1]}_sum" + ("" if level == top_level else "_lateral")
    else:
        base = f"fpn_res{stage}_{last_blocks[level - 1]}_sum"
    if len(parts) == 4:  # Sequential(conv, GroupNorm)
        return base + ("_gn_" + _c2_leaf(leaf) if parts[2] == "1" else "_" + leaf[0])
    return f"{base}_{leaf[0]}"


def to_c2_blobs(state: dict[str, torch.Tensor], last_blocks: tuple[int, ...], *, gn: bool = False,
                top_level: int = 4, classifier: bool = True, momentum: bool = True,
                detector: bool = False) -> dict[str, np.ndarray]:
    """A Detectron blob dict for ``state`` (float32 numpy), with the extras real files carry."""
    blobs: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        name = c2_blob_name(key, last_blocks, gn=gn, top_level=top_level)
        if name is not None:
            blobs[name] = tensor.detach().numpy().astype(np.float32)
            if momentum:  # real momentum blobs have the weight's shape; the loader ignores them by name
                blobs[name + "_momentum"] = np.zeros(1, np.float32)
    rng = np.random.default_rng(0)
    if classifier:
        head = "pred" if gn else "fc1000"
        blobs[f"{head}_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
        blobs[f"{head}_b"] = rng.standard_normal(1000).astype(np.float32)
    if detector:
        blobs.update({k: rng.standard_normal(s).astype(np.float32) for k, s in C2_DETECTOR_EXTRAS.items()})
    return blobs


def torchvision_name(key: str) -> str | None:
    """The torchvision ResNet name of a model key, or None for keys torchvision files never hold."""
    parts = key.split(".")
    if parts[0] != "body" or "offset" in parts:
        return None
    if parts[1] == "stem":
        return ".".join(parts[2:])
    if parts[-2:] == ["conv", "weight"]:  # deformable conv2.conv.weight -> conv2.weight
        parts = parts[:-2] + ["weight"]
    return ".".join(parts[1:])


def to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict for ``state``, with ``fc`` and ``num_batches_tracked``."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = torchvision_name(key)
        if name is not None:
            out[name] = tensor.clone()
            if name.endswith("running_var"):
                out[name.replace("running_var", "num_batches_tracked")] = torch.tensor(1000, dtype=torch.long)
    out["fc.weight"] = torch.randn(1000, 2048)
    out["fc.bias"] = torch.randn(1000)
    return out


def to_detector(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """A whole-detector state dict: the backbone under ``{prefix}backbone.`` plus head tensors."""
    out = {f"{prefix}backbone.{k}": v.clone() for k, v in state.items()}
    out.update({f"{prefix}{k}": torch.randn(s) for k, s in DETECTOR_EXTRAS.items()})
    return out


def write_pickle(path: Path, obj: object, protocol: int = 4) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)
    return path


def py2_numpy_pickle(blobs: dict[str, np.ndarray]) -> bytes:
    """Bytes as Python 2's cPickle (protocol 2) writes ``{"blobs": blobs}``: Detectron's format.

    Keys are Python 2 ``unicode`` (Detectron uses unicode_literals), array buffers and dtype
    codes are Python 2 ``str`` (BINSTRING, read back as latin-1), and numpy is addressed as
    ``numpy.core.multiarray``, as numpy 1.x wrote it.
    """

    def py2_str(data: bytes) -> bytes:
        return b"T" + struct.pack("<I", len(data)) + data  # BINSTRING

    def unicode(text: str) -> bytes:
        data = text.encode("utf-8")
        return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

    def small_int(value: int) -> bytes:
        return b"K" + bytes([value]) if value < 256 else b"J" + struct.pack("<i", value)

    out = bytearray(b"\x80\x02}")  # PROTO 2, top-level EMPTY_DICT
    out += unicode("blobs") + b"}("  # key, inner EMPTY_DICT, MARK
    for name, array in blobs.items():
        array = np.ascontiguousarray(array, dtype="<f4")
        out += unicode(name)
        out += b"cnumpy.core.multiarray\n_reconstruct\n"
        out += b"cnumpy\nndarray\n" + small_int(0) + b"\x85" + py2_str(b"b") + b"\x87R"  # (ndarray, (0,), 'b') REDUCE
        out += b"(" + small_int(1)  # MARK, version 1
        out += b"(" + b"".join(small_int(d) for d in array.shape) + b"t"  # shape tuple
        out += b"cnumpy\ndtype\n" + py2_str(b"f4") + small_int(0) + small_int(1) + b"\x87R"  # dtype('f4', 0, 1)
        minus_one = b"J\xff\xff\xff\xff"  # BININT -1
        out += b"(" + small_int(3) + py2_str(b"<") + b"NNN" + minus_one * 2 + small_int(0) + b"tb"  # dtype state
        out += b"\x89" + py2_str(array.tobytes()) + b"tb"  # False (C order), raw data, TUPLE, BUILD
    out += b"us."  # SETITEMS, SETITEM (blobs into top level), STOP
    return bytes(out)
