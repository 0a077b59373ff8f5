"""What an exported ONNX file says about itself: the ``deformrt.*`` metadata_props schema.

Every model written by ``deformrt export`` carries these string properties (``ModelProto.metadata_props``)
so other tools (engine builder, comparison, ``deformrt info``) can rebuild the PyTorch model and
preprocess inputs without guessing:

=========================== ===============================================================
key                         value
=========================== ===============================================================
deformrt.version            deformrt version that wrote the file
deformrt.body               backbone body name, e.g. ``R-101-FPN``
deformrt.config             the full config (``cfg.dump()`` YAML)
deformrt.weights            ``seed:<N>`` for seeded random init, else the checkpoint file name
deformrt.weights_sha256     SHA-256 of the checkpoint file ("" for random init)
deformrt.output_names       JSON list, e.g. ``["P2", "P3", "P4", "P5", "P6"]``
deformrt.output_strides     JSON list of ints
deformrt.output_channels    JSON list of ints
deformrt.pixel_mean         JSON list of 3 floats (in ``color_order``)
deformrt.pixel_std          JSON list of 3 floats
deformrt.to_bgr255          JSON bool: inputs are 0..255 BGR (maskrcnn-benchmark's TO_BGR255)
deformrt.color_order        ``BGR`` or ``RGB``
deformrt.size_divisibility  decimal int: H and W must be multiples of it (0: any size)
deformrt.dcn_op             ``plugin`` (our custom op) or ``onnx`` (standard DeformConv)
deformrt.dcn_op_version     ``deformrt.DeformConv2d/1`` or ``ai.onnx.DeformConv/19``
deformrt.dynamic_axes       JSON: tensor name -> {axis index (string): dimension name}
deformrt.export_shape       JSON ``[N, 3, H, W]``: the input shape used for export
deformrt.init_seed          decimal int: the ``torch.manual_seed`` before building; with a
                            checkpoint it still decides tensors the file lacks (offset convs
                            trained from init in ImageNet init files)
=========================== ===============================================================

Only :mod:`json`, ``onnx`` protobufs and a file hash are used here, so any tool can import this
module cheaply.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

from models.errors import DeformRTError, require_file

PREFIX = "deformrt."
SEED_PREFIX = "seed:"
DCN_OP_PLUGIN = "plugin"
DCN_OP_ONNX = "onnx"
DCN_OPS = (DCN_OP_PLUGIN, DCN_OP_ONNX)

# Fields stored as JSON text; the rest are plain strings (size_divisibility, init_seed: decimal ints).
_JSON_FIELDS = frozenset({
    "output_names", "output_strides", "output_channels", "pixel_mean", "pixel_std", "to_bgr255",
    "dynamic_axes", "export_shape",
})


def read_onnx(path: Path, load_external_data: bool = True) -> "onnx.ModelProto":  # noqa: F821
    """The ONNX model at ``path``; a one-line DeformRTError for a missing file, a folder, or a file that is
    not an ONNX model (an empty file parses as an empty model, so that is refused too)."""
    import onnx

    require_file(path, "ONNX file")
    try:
        model = onnx.load_model(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        detail = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise DeformRTError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {detail})") from None
    if not model.HasField("graph"):
        raise DeformRTError(f"{path} is not a readable ONNX model (it holds no graph"
                            f"{'; the file is empty' if path.stat().st_size == 0 else ''})")
    return model


@dataclass(frozen=True)
class ExportMetadata:
    """The ``deformrt.*`` properties of an exported model (see the module docstring)."""

    version: str
    body: str
    config: str
    weights: str
    weights_sha256: str
    output_names: tuple[str, ...]
    output_strides: tuple[int, ...]
    output_channels: tuple[int, ...]
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]
    to_bgr255: bool
    color_order: str
    size_divisibility: int
    dcn_op: str
    dcn_op_version: str
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    export_shape: tuple[int, ...] = ()
    init_seed: int = 0

    @property
    def seed(self) -> Optional[int]:
        """The random-init seed, or None when the weights came from a checkpoint."""
        if self.weights.startswith(SEED_PREFIX):
            return int(self.weights[len(SEED_PREFIX):])
        return None

    def check_rebuild_weights(self, weights: Optional[Union[str, Path]]) -> None:
        """DeformRTError unless ``weights`` (a checkpoint path, or None) can rebuild this export's
        PyTorch model: a checkpoint export needs that very checkpoint (same SHA-256), a random-init
        export takes None (it is reseeded) or any checkpoint."""
        if weights is None:
            if self.seed is None:
                raise DeformRTError(f"this model was exported with weights from {self.weights}; pass that "
                                    "checkpoint to rebuild it")
            return
        require_file(weights, "checkpoint")
        if self.weights_sha256:
            from exporter.util.fsutil import sha256_file

            if sha256_file(weights) != self.weights_sha256:
                raise DeformRTError(f"checkpoint {weights} is not the one this model was exported with "
                                    f"({self.weights}, sha256 {self.weights_sha256[:12]}...)")

    @property
    def dynamic(self) -> bool:
        """True when some input or output axis is symbolic."""
        return any(self.dynamic_axes.values())

    def to_props(self) -> dict[str, str]:
        """The metadata as ``deformrt.<field>`` -> string, in field order."""
        props = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _JSON_FIELDS:
                text = json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
            else:
                text = str(value)
            props[PREFIX + f.name] = text
        return props

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (lists for tuples), for ``--json`` output."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ExportMetadata":
        """Parse ``deformrt.*`` properties; DeformRTError names a missing or malformed key."""
        values = {}
        for f in fields(cls):
            key = PREFIX + f.name
            if key not in props:
                raise DeformRTError(f"ONNX metadata has no '{key}': the file was not written by deformrt export")
            text = props[key]
            try:
                if f.name in _JSON_FIELDS:
                    value = json.loads(text)
                    values[f.name] = tuple(value) if isinstance(value, list) else value
                elif f.name in ("size_divisibility", "init_seed"):
                    values[f.name] = int(text)
                else:
                    values[f.name] = text
            except ValueError as exc:
                raise DeformRTError(f"ONNX metadata '{key}' is malformed ({exc}): {text[:80]!r}") from None
        meta = cls(**values)
        if meta.dcn_op not in DCN_OPS:
            raise DeformRTError(f"ONNX metadata 'deformrt.dcn_op' is {meta.dcn_op!r}; expected one of {DCN_OPS}")
        return meta

    @classmethod
    def from_model(cls, model: Union["onnx.ModelProto", str, Path]) -> "ExportMetadata":  # noqa: F821
        """Read the metadata from a ModelProto or an .onnx path (weights are not loaded for a path)."""
        import onnx

        if not isinstance(model, onnx.ModelProto):
            model = read_onnx(Path(model), load_external_data=False)
        return cls.from_props({p.key: p.value for p in model.metadata_props})

    def apply(self, model: "onnx.ModelProto") -> None:  # noqa: F821
        """Write these properties into ``model.metadata_props`` (replacing any ``deformrt.*`` ones)."""
        keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
        del model.metadata_props[:]
        for key, value in keep + list(self.to_props().items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value


DETECTOR_KEY = PREFIX + "detector"


@dataclass(frozen=True)
class DetectorMetadata:
    """What a whole-detector file adds (one JSON property, ``deformrt.detector``): the kind
    (rpn, faster_rcnn, mask_rcnn, retinanet), class count (background included), fixed sizes,
    the test-time resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), whether stage outputs are present,
    whether TensorRT's limits were enforced, and whether random weights were calibrated
    (:func:`models.calibrate.calibrate_synthetic_detector`)."""

    kind: str
    num_classes: int
    detections: int
    proposals: int
    mask_size: int
    min_size_test: int
    max_size_test: int
    debug_outputs: bool = False
    trt_limits: bool = True
    calibrated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, model) -> None:
        entry = next((p for p in model.metadata_props if p.key == DETECTOR_KEY), None) or model.metadata_props.add()
        entry.key, entry.value = DETECTOR_KEY, json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_model(cls, model) -> Optional["DetectorMetadata"]:
        """The detector properties of a ModelProto or .onnx path; None for a backbone file."""
        import onnx

        if not isinstance(model, onnx.ModelProto):
            model = onnx.load_model(str(model), load_external_data=False)
        text = next((p.value for p in model.metadata_props if p.key == DETECTOR_KEY), None)
        if text is None:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise DeformRTError(f"ONNX metadata '{DETECTOR_KEY}' is malformed ({exc})") from None
