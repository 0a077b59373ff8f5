"""Write model inputs for ``polygraphy run --load-inputs``: real or random images, preprocessed exactly
as a deformrt model expects (its channel order, scaling, mean, std and padding; see
:mod:`exporter.evaluation.inputs`), in the JSON format Polygraphy reads (one feed dict per iteration).

    python -m exporter.polygraphy_ext.inputs model.onnx -o inputs.json [--images a.png b.npy]
                                            [--batch N] [--shape HxW] [--seed N] [--force]

Without ``--images``: ``--batch`` random images of ``--shape`` (the export size by default), pixel
values uniform in 0..255 from ``--seed`` (a fresh seed when not given; it is printed). These are the
inputs ``deformrt compare`` makes from the same options. An existing output is kept unless
``--force`` is given.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

from exporter.util.usage import SEED_RANGE, ScriptParser, first_paragraph, print_error, whole_number
from models.errors import DeformRTError


def write_inputs(onnx_path: Path, out: Path, images: Sequence[Path] = (), batch: int = 1,
                 shape: Optional[tuple[int, int]] = None, seed: Optional[int] = None, force: bool = False) -> str:
    """Write the inputs; returns a one-line description (input name, shape, where it came from)."""
    from polygraphy.json import to_json

    from exporter.evaluation.compare import make_inputs, single_input
    from exporter.onnx.metadata import DetectorMetadata
    from exporter.trt.build import load_onnx
    from exporter.trt.profiles import format_shape
    from exporter.util.fsutil import atomic_write_text, check_output_path

    check_output_path(out, force)  # before the slow steps
    model, meta = load_onnx(Path(onnx_path))
    detector = DetectorMetadata.from_model(model)
    if detector is not None:  # images and image_sizes, as `deformrt compare` makes them for a detector
        from exporter.evaluation.detector_compare import detector_inputs

        feed, used_seed = detector_inputs(meta, detector, images, batch, shape, seed)
        atomic_write_text(Path(out), to_json([OrderedDict(feed)]), force)
        where = ", ".join(str(p) for p in images) if images else f"random, seed {used_seed}"
        return (f"images {format_shape(feed['images'].shape)}, image_sizes {feed['image_sizes'].tolist()} "
                f"({where})")
    name, _ = single_input(model)
    array, used_seed = make_inputs(meta, images, batch, shape, seed)
    atomic_write_text(Path(out), to_json([OrderedDict([(name, array)])]), force)
    where = ", ".join(str(p) for p in images) if images else f"random, seed {used_seed}"
    return f"{name} {format_shape(array.shape)} ({where})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    from exporter.trt.profiles import parse_hw  # numbers only, no TensorRT

    parser = ScriptParser(prog="python -m exporter.polygraphy_ext.inputs", description=first_paragraph(__doc__))
    parser.add_argument("model", type=Path, help="an ONNX model exported by deformrt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--images", type=Path, nargs="+", default=[], help=".npy (HxWx3 RGB 0..255), .png or .jpg")
    parser.add_argument("--batch", type=whole_number(1), default=1, help="random images: how many (default 1)")
    parser.add_argument("--shape", default=None, help="random images: HxW (default: the export size)")
    parser.add_argument("--seed", type=whole_number(SEED_RANGE["min"], SEED_RANGE["max"]), default=None,
                        help="random images: the seed (default: a fresh one)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    try:
        shape = None if args.shape is None else parse_hw(args.shape, "--shape")
        described = write_inputs(args.model, args.output, args.images, args.batch, shape, args.seed, args.force)
    except DeformRTError as exc:
        print_error(exc)
        return 1
    print(f"wrote {args.output}: {described}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
