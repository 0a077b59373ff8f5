"""Input shape profiles (min / opt / max) for TensorRT engines: parsing, defaults, validation.

A profile gives, for one network input, the smallest, the typical and the largest shape an engine
accepts. Shapes are written ``1x3x800x1344``; several inputs are separated by commas and named
(``images:1x3x800x1344``); a model with one input may leave the name out.

Defaults come from the exported model: an axis that is static in the ONNX graph (and not listed in
the ``deformrt.dynamic_axes`` metadata) is fixed; a dynamic batch axis ranges over
1..max(export batch, :data:`DEFAULT_MAX_BATCH`); a dynamic height or width ranges over
:data:`DEFAULT_MIN_SIDE`..:data:`DEFAULT_MAX_SIDE` (widened to include the export size), rounded to
the model's size divisibility. With maskrcnn-benchmark's test resize (shorter side 800, longer
side at most 1333, padded to a multiple of 32) that covers every image up to a 4:1 aspect ratio;
a whole-detector file's sides go up to its own INPUT.MAX_SIZE_TEST instead (:func:`detector_max_side`),
and its ``image_sizes`` follows the batch range of ``images`` (:func:`follows_batch`);
opt is the export shape. Shapes given on the command line replace the matching default, and the
defaults not given widen to include them (``--opt-shape`` beyond the default max raises max).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from models.errors import DeformRTError

DEFAULT_MIN_SIDE = 320
DEFAULT_MAX_SIDE = 1344
DEFAULT_MAX_BATCH = 4

Shape = tuple[int, ...]
Dim = Union[int, str]  # a static size, or the name of a symbolic dimension
_AXIS_NAMES = {0: "batch", 1: "channels", 2: "height", 3: "width"}
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _axis_name(axis: int, rank: int) -> str:
    return _AXIS_NAMES[axis] if rank == 4 else f"axis {axis}"


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max shapes of one input."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        shape = tuple(shape)
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def describe(self) -> str:
        return f"{self.name}: min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ShapeProfile":
        try:
            return cls(str(d["name"]), *(tuple(int(x) for x in d[k]) for k in ("min", "opt", "max")))
        except (KeyError, TypeError, ValueError) as exc:
            raise DeformRTError(f"malformed shape profile {dict(d)!r} ({type(exc).__name__}: {exc})") from None


def input_dims(model) -> dict[str, list[Dim]]:
    """The graph inputs of an ``onnx.ModelProto`` (initializers excluded): name -> dims, an int for a
    static size, the symbol name (or ``"?"``) for a dynamic one."""
    inits = {t.name for t in model.graph.initializer}
    dims = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
                         for d in vi.type.tensor_type.shape.dim]
    return dims


def parse_shapes(text: str, input_names: Sequence[str], flag: str) -> dict[str, Shape]:
    """Parse ``name:1x3x800x1344[,name2:...]`` (the name optional for a single-input model)."""
    shapes: dict[str, Shape] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, dims = item.rpartition(":")
        if not sep:
            if len(input_names) != 1:
                raise DeformRTError(f"{flag} {item!r}: the model has inputs {', '.join(input_names)}; "
                                    f"write name:NxCxHxW")
            name = input_names[0]
        if name not in input_names:
            raise DeformRTError(f"{flag}: the model has no input {name!r} (inputs: {', '.join(input_names)})")
        if not _SHAPE_RE.match(dims):
            raise DeformRTError(f"{flag} {item!r}: a shape is written like 1x3x800x1344")
        if name in shapes:
            raise DeformRTError(f"{flag}: input {name!r} is given twice")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    if not shapes:
        raise DeformRTError(f"{flag} is empty; a shape is written like 1x3x800x1344")
    return shapes


def parse_hw(text: str, flag: str = "--shape") -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``800x1344``) into two positive ints."""
    m = re.fullmatch(r"(-?\d+)x(-?\d+)", text.strip())
    if not m:
        raise DeformRTError(f"{flag} {text!r}: write the height and width as HxW, e.g. 800x1344")
    height, width = int(m[1]), int(m[2])
    if min(height, width) < 1:
        raise DeformRTError(f"{flag} {text!r}: height and width must be at least 1, e.g. 800x1344")
    return height, width


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple if multiple > 0 else value


def _round_down(value: int, multiple: int) -> int:
    return max(multiple, value // multiple * multiple) if multiple > 0 else value


def default_profile(name: str, dims: Sequence[Dim], export_shape: Sequence[int], size_divisibility: int,
                    dynamic_axes: Optional[Mapping[str, str]] = None, max_side: int = DEFAULT_MAX_SIDE) -> ShapeProfile:
    """The default profile of one input (see the module docstring).

    ``dims`` are the graph input's dims (:func:`input_dims`), ``export_shape`` the shape the model
    was exported with, ``dynamic_axes`` the metadata's ``{axis index: name}`` for this input,
    ``max_side`` the largest height or width (:func:`detector_max_side` for a detector file).
    """
    if len(export_shape) != len(dims):
        raise DeformRTError(f"input {name!r} has rank {len(dims)} but the export shape "
                            f"{format_shape(export_shape)} has rank {len(export_shape)}")
    dynamic = {int(a) for a in (dynamic_axes or {})} | {i for i, d in enumerate(dims) if not isinstance(d, int)}
    lo, opt, hi = [], [], []
    for axis, export in enumerate(export_shape):
        if axis not in dynamic:
            size = dims[axis] if isinstance(dims[axis], int) else export
            lo.append(size), opt.append(size), hi.append(size)
        elif axis == 0:
            lo.append(1), opt.append(export), hi.append(max(export, DEFAULT_MAX_BATCH))
        elif len(dims) == 4 and axis in (2, 3):
            lo.append(min(_round_down(DEFAULT_MIN_SIDE, size_divisibility), export))
            opt.append(export)
            hi.append(max(_round_up(max_side, size_divisibility), export))
        else:
            lo.append(export), opt.append(export), hi.append(export)
    return ShapeProfile(name, tuple(lo), tuple(opt), tuple(hi))


def validate_profile(profile: ShapeProfile, dims: Sequence[Dim], size_divisibility: int) -> None:
    """DeformRTError naming the input, axis and rule a profile breaks."""
    rank = len(dims)
    for label, shape in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        where = f"--{label}-shape {profile.name}:{format_shape(shape)}"
        if len(shape) != rank:
            raise DeformRTError(f"{where}: input {profile.name!r} has {rank} dimensions, the shape has {len(shape)}")
        for axis, (size, dim) in enumerate(zip(shape, dims)):
            what = _axis_name(axis, rank)
            if size < 1:
                raise DeformRTError(f"{where}: {what} must be at least 1")
            if isinstance(dim, int) and size != dim:
                raise DeformRTError(f"{where}: {what} is fixed at {dim} in the model")
            if rank == 4 and axis in (2, 3) and size_divisibility > 0 and size % size_divisibility:
                raise DeformRTError(f"{where}: {what} {size} is not a multiple of the model's size "
                                    f"divisibility {size_divisibility}")
    for axis in range(rank):
        if not profile.min[axis] <= profile.opt[axis] <= profile.max[axis]:
            raise DeformRTError(f"shape profile of {profile.name!r}: {_axis_name(axis, rank)} needs min <= opt <= max, "
                                f"got {profile.min[axis]}, {profile.opt[axis]}, {profile.max[axis]}")


def follows_batch(dims: Sequence[Dim], image_dims: Sequence[Dim]) -> bool:
    """True for an input whose only dynamic axis is the batch, named as the image input's batch (a
    detector's ``image_sizes`` [batch, 2]): its profile follows the image input's batch range."""
    return (bool(dims) and bool(image_dims) and isinstance(dims[0], str) and dims[0] not in ("", "?")
            and dims[0] == image_dims[0] and all(isinstance(d, int) for d in dims[1:]))


def batch_follower_profile(name: str, dims: Sequence[Dim], image: ShapeProfile) -> ShapeProfile:
    """The profile of a :func:`follows_batch` input: the image profile's batch min/opt/max, the
    other axes fixed at their static sizes."""
    rest = tuple(int(d) for d in dims[1:])
    return ShapeProfile(name, (image.min[0], *rest), (image.opt[0], *rest), (image.max[0], *rest))


def detector_max_side(max_size_test: int) -> int:
    """The largest side a detector's input can have: upstream's test resize keeps both sides within
    INPUT.MAX_SIZE_TEST (padding then rounds it up to the size divisibility)."""
    return max(int(max_size_test), 1)


def resolve_profiles(inputs: Mapping[str, Sequence[Dim]], export_shape: Sequence[int], size_divisibility: int,
                     dynamic_axes: Optional[Mapping[str, Mapping[str, str]]] = None,
                     min_shape: Optional[str] = None, opt_shape: Optional[str] = None,
                     max_shape: Optional[str] = None, max_side: int = DEFAULT_MAX_SIDE) -> list[ShapeProfile]:
    """One validated profile per input: defaults, overridden by the ``--min/opt/max-shape`` texts.

    The export shape applies to the first (image) input; an input whose only dynamic axis is the
    batch, named as the image input's (a detector's ``image_sizes``), follows the image input's
    batch range; any other input
    must be static or given on the command line.
    """
    names = list(inputs)
    given = {label: parse_shapes(text, names, f"--{label}-shape") if text else {}
             for label, text in (("min", min_shape), ("opt", opt_shape), ("max", max_shape))}
    profiles = []
    for index, (name, dims) in enumerate(inputs.items()):
        if index == 0:
            base = default_profile(name, dims, export_shape, size_divisibility, (dynamic_axes or {}).get(name),
                                   max_side)
        elif all(isinstance(d, int) for d in dims):
            base = ShapeProfile(name, *(tuple(dims),) * 3)
        elif profiles and follows_batch(dims, inputs[names[0]]):
            base = batch_follower_profile(name, dims, profiles[0])
        else:
            user = [given[label].get(name) for label in ("min", "opt", "max")]
            if None in user:
                raise DeformRTError(f"input {name!r} is dynamic: give its --min-shape, --opt-shape and --max-shape")
            base = ShapeProfile(name, *user)
        lo, opt, hi = (given[label].get(name) for label in ("min", "opt", "max"))
        for label, shape in (("min", lo), ("opt", opt), ("max", hi)):
            if shape is not None and len(shape) != len(dims):
                raise DeformRTError(f"--{label}-shape {name}:{format_shape(shape)}: input {name!r} has {len(dims)} "
                                    f"dimensions, the shape has {len(shape)}")
        # Defaults not given widen to include the given shapes.
        known = [s for s in (lo, opt, hi) if s is not None]
        lo = lo or tuple(min(v) for v in zip(base.min, *known))
        hi = hi or tuple(max(v) for v in zip(base.max, *known))
        opt = opt or tuple(min(max(o, a), b) for o, a, b in zip(base.opt, lo, hi))
        profile = ShapeProfile(name, tuple(lo), tuple(opt), tuple(hi))
        validate_profile(profile, dims, size_divisibility)
        profiles.append(profile)
    return profiles


def check_in_profile(profile: ShapeProfile, shape: Sequence[int]) -> None:
    """DeformRTError when ``shape`` lies outside ``profile`` (an engine cannot run it)."""
    if not profile.contains(shape):
        raise DeformRTError(f"input {profile.name!r} shape {format_shape(shape)} is outside the engine's profile "
                            f"(min {format_shape(profile.min)}, max {format_shape(profile.max)}); rebuild the engine "
                            f"with a wider --min-shape/--max-shape")
