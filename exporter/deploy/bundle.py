"""``deformrt deploy``: an exported model as a folder that builds and checks itself on the device.

Engines are specific to a GPU and a TensorRT release, so on a Jetson everything after the ONNX
file happens on the device. The bundle (file names in :mod:`exporter.deploy.layout`) carries:

- the model in four flavours made from the one ONNX file by graph passes, so they differ only where
  they must: deformrt's plugin op or standard ``DeformConv`` (TensorRT >= 10.1 parses it without our
  plugin: the fallback), each in fp32 and mixed fp16 (:mod:`exporter.onnx.fp16`; fp16 engines are
  built strongly typed from it, as TensorRT 11 has no FP16 builder flag);
- the plugin's and the C++ runtime's CMake project (``plugins/`` without build outputs), because a
  plugin for JetPack must be compiled with JetPack's CUDA for the device's architecture;
- deformrt's device-side Python (``python/``), whose imports are numpy and tensorrt only;
- reference inputs (deterministic random images, or ``--images``, preprocessed as the model
  expects) and PyTorch's fp32 CPU outputs on them; for a detector file (``deformrt export
  --detector``) also ``image_sizes``, and ONNX Runtime's fp32 CPU detections as references (the
  export verified ONNX Runtime against PyTorch), which the device checks as sets;
- ``deploy.conf`` (what build.sh reads: TensorRT majors the plugin supports, shape profile,
  tolerances of ``deformrt compare``, default precision), ``metadata.json`` (the model's
  ``deformrt.*`` metadata) and ``SHA256SUMS``;
- ``build.sh`` and ``README.md`` from ``plugins/deploy/``.

Nothing is downloaded on the device and nothing beyond JetPack is needed there. The folder is
written to a temporary directory beside its destination and renamed into place when complete.
"""

from __future__ import annotations

import ast
import datetime
import json
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from exporter.deploy import layout
from exporter.util.progress import Progress
from models.errors import DeformRTError, require_file
from models.version import __version__

# Modules deformrt's Python needs on the device: the bundle's check and loading and running an
# engine. The bundle carries them and everything in this project they import.
DEVICE_MODULES = ("exporter.deploy.check", "exporter.deploy.predict", "exporter.trt.engine", "exporter.trt.session",
                  "exporter.trt.plugin", "exporter.trt.sidecar")
# plugins/deploy/ files copied to the bundle's top level (name in plugins/deploy -> name in the bundle).
DEPLOY_FILES = {"build.sh": layout.BUILD_SCRIPT, "bundle-README.md": layout.README}
_PROJECT_PACKAGES = ("exporter", "models")


@dataclass(frozen=True)
class DeployOptions:
    """What ``deformrt deploy`` asks for (see its --help)."""

    weights: Optional[Path] = None
    precision: str = layout.DEFAULT_PRECISION
    min_shape: Optional[str] = None
    opt_shape: Optional[str] = None
    max_shape: Optional[str] = None
    images: Sequence[Path] = ()
    seed: int = 0
    plugins_dir: Optional[Path] = None  # default: models.native.PLUGINS_DIR


@dataclass
class BundleResult:
    """What ``deformrt deploy`` wrote (``to_dict`` is the stable ``--json`` form)."""

    path: Path
    conf: dict[str, str]  # deploy.conf, in key order
    profile: object  # exporter.trt.profiles.ShapeProfile
    files: list[str]  # every file, relative to path
    size_bytes: int
    dcn_nodes: int
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        c = self.conf
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "body": c["body"],
            "weights": c["weights"],
            "dcn_nodes": self.dcn_nodes,
            "models": {f"{dcn}-{p}": layout.onnx_model(dcn, p) for dcn in layout.DCN_FLAVOURS for p in layout.PRECISIONS},
            "precision": c["precision"],
            "profile": self.profile.to_dict(),
            "tensorrt_majors": [int(m) for m in c["tensorrt_majors"].split()],
            "tolerances": {p: float(c[f"tolerance_{p}"]) for p in layout.PRECISIONS},
            "inputs": c["inputs"].split(),
            "outputs": c["outputs"].split(),
            "reference": {"shape": [int(d) for d in c["reference_shape"].split("x")], "source": c["reference_source"],
                          "seed": int(c["reference_seed"]) if c["reference_seed"] else None,
                          "images": c["reference_images"].split(), "computed_by": c["reference_by"]},
            "files": len(self.files),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "model": c["model"],
            "detector": None if c["model"] != "detector" else {
                "kind": c["detector_kind"], "classes": int(c["classes"]), "detections": int(c["detections"]),
                "mask_size": int(c["mask_size"]), "score_threshold": float(c["score_threshold"]),
                "nms_threshold": float(c["nms_threshold"]),
                "check": {p: {key: float(c[f"{key}_{p}"]) for key in layout.DETECTION_TOLERANCES[p]}
                          for p in layout.PRECISIONS}},
        }

    def summary(self) -> str:
        c, prof = self.conf, self.profile
        where = (f"random, seed {c['reference_seed']}" if c["reference_source"] == "random"
                 else c["reference_images"].replace(" ", ", "))
        weights = (f"random init (seed {c['weights'][len('seed:'):]})" if c["weights"].startswith("seed:")
                   else c["weights"])
        return "\n".join([
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, {len(self.files)} files)",
            f"  model:     {c['body']}{' ' + c['detector_kind'] + ' detector' if c['model'] == 'detector' else ''}, "
            f"{self.dcn_nodes} deformable convs; outputs {', '.join(c['outputs'].split())}; weights {weights}",
            f"  flavours:  {layout.ONNX_DIR}/{{plugin,onnx}}-{{fp32,fp16}}.onnx (deformrt plugin op / standard DeformConv "
            f"that needs no plugin)",
            f"  engine:    {c['precision']} by default, TensorRT {' or '.join(c['tensorrt_majors'].split())}; profile "
            f"min {c['min_shapes']}, opt {c['opt_shapes']}, max {c['max_shapes']}"
            if c["model"] == "detector" and c["min_shapes"] else
            f"  engine:    {c['precision']} by default, TensorRT {' or '.join(c['tensorrt_majors'].split())}; profile "
            f"{prof.name}: min {_fmt(prof.min)}, opt {_fmt(prof.opt)}, max {_fmt(prof.max)}",
            (f"  reference: {c['inputs']} {c['reference_shape']} ({where}); {c['reference_by']}; tolerance fp32 "
             f"{c['tolerance_fp32']}, fp16 {c['tolerance_fp16']}" if c["model"] != "detector" else
             f"  reference: {c['reference_shape']} ({where}); detections by {c['reference_by']}, checked as sets "
             f"(class and IoU >= {c['match_iou_fp16']} fp16 / {c['match_iou_fp32']} fp32)"),
            f"  next:      copy {self.path.name}/ to the device, then run ./{layout.BUILD_SCRIPT} there",
        ])


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


# ----------------------------------------------------------------------------------------------
# Files copied from this checkout


def _deploy_sources(plugins_dir: Path) -> dict[Path, str]:
    """plugins/deploy files -> their names in the bundle; DeformRTError when one is missing."""
    sources = {}
    for name, target in DEPLOY_FILES.items():
        path = plugins_dir / "deploy" / name
        if not path.is_file():
            raise DeformRTError(f"{path} is missing from this deformrt installation; the bundle needs it")
        sources[path] = target
    return sources


def _build_output_filter(plugins_dir: Path):
    """copytree filter: build folders, hidden files, caches and compiled objects stay behind, and so
    does the top-level ``deploy/`` (its files go to the bundle's top level)."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        return {n for n in names
                if n.startswith(".") or n == "__pycache__" or n.endswith((".o", ".so", ".a", ".pyc"))
                or ((here / n).is_dir() and n.startswith("build"))
                or (here == plugins_dir and n == "deploy")}

    return ignore


def copy_plugin_project(plugins_dir: Path, target: Path) -> None:
    """The plugin's and runtime's CMake project: ``plugins/`` without build outputs or ``deploy/``."""
    if not (plugins_dir / "CMakeLists.txt").is_file():
        raise DeformRTError(f"{plugins_dir}/CMakeLists.txt is missing: the plugin sources are not in this deformrt "
                            f"installation")
    shutil.copytree(plugins_dir, target, ignore=_build_output_filter(plugins_dir))


def _module_file(name: str, root: Path) -> Optional[Path]:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_imports(path: Path, root: Path) -> set[str]:
    """Project modules ``path`` imports anywhere (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from exporter.deploy import layout`` imports a submodule
            names.update(f"{node.module}.{a.name}" for a in node.names
                         if _module_file(f"{node.module}.{a.name}", root) is not None)
    return {n for n in names if n.split(".")[0] in _PROJECT_PACKAGES and _module_file(n, root) is not None}


def device_python_files(root: Optional[Path] = None, modules: Sequence[str] = DEVICE_MODULES) -> list[Path]:
    """The project files (relative to ``root``) :data:`DEVICE_MODULES` need: each module, the
    project modules it imports, transitively, and their packages' ``__init__.py``."""
    root = root or Path(__file__).resolve().parents[2]
    todo, seen = list(modules), set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages are imported first
            package = ".".join(parts[:i])
            if package not in seen:
                path = _module_file(package, root)
                if path is None:
                    raise DeformRTError(f"device module {package} not found under {root}")
                seen.add(package)
                todo.extend(_project_imports(path, root) - seen)
    return sorted(_module_file(n, root).relative_to(root) for n in seen)


def copy_device_python(target: Path) -> list[Path]:
    root = Path(__file__).resolve().parents[2]
    files = device_python_files(root)
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target / rel)
    return files


# ----------------------------------------------------------------------------------------------
# Model flavours and references


def dcn_op_version(dcn_op: str) -> str:
    """``deformrt.dcn_op_version`` of a flavour (as :func:`exporter.onnx.export.finish_export` writes it)."""
    from exporter.onnx import op_contract as oc
    from exporter.onnx.metadata import DCN_OP_PLUGIN
    from exporter.onnx.passes import ONNX_DEFORM_CONV, ONNX_DEFORM_CONV_OPSET

    if dcn_op == DCN_OP_PLUGIN:
        return f"{oc.OP_DOMAIN}.{oc.OP_NAME}/{oc.OP_DOMAIN_VERSION}"
    return f"ai.onnx.{ONNX_DEFORM_CONV}/{ONNX_DEFORM_CONV_OPSET}"


def model_flavours(model, meta, detector: bool = False) -> dict[str, object]:
    """Bundle path (:func:`exporter.deploy.layout.onnx_model`) -> ModelProto of every flavour of
    ``model`` (either DCN flavour), each with its ``deformrt.dcn_op`` metadata; ``model`` is unchanged.
    A detector's fp16 flavour keeps its postprocessing in fp32
    (:func:`exporter.onnx.detector_export.convert_detector_to_fp16`)."""
    import dataclasses

    import onnx

    from exporter.onnx.metadata import DCN_OP_ONNX, DCN_OP_PLUGIN
    from exporter.onnx.passes import to_onnx_op, to_plugin_op

    if detector:  # imported only here: it brings in the detector graph modules
        from exporter.onnx.detector_export import convert_detector_to_fp16 as to_fp16
    else:
        from exporter.onnx.fp16 import convert_to_fp16 as to_fp16

    made = {}
    for dcn, dcn_op, rewrite in (("plugin", DCN_OP_PLUGIN, to_plugin_op), ("onnx", DCN_OP_ONNX, to_onnx_op)):
        fp32 = onnx.ModelProto()
        fp32.CopyFrom(model)
        rewrite(fp32)
        dataclasses.replace(meta, dcn_op=dcn_op, dcn_op_version=dcn_op_version(dcn_op)).apply(fp32)
        made[layout.onnx_model(dcn, "fp32")] = fp32
        made[layout.onnx_model(dcn, "fp16")] = to_fp16(fp32).model
    return made


def torch_references(meta, weights: Optional[Path], batch: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch model rebuilt from ``meta`` (and ``weights``), its fp32 CPU outputs on ``batch``."""
    import torch

    from exporter.evaluation.runners import flatten_outputs
    from exporter.onnx.export import rebuild_model

    model = rebuild_model(meta, str(weights) if weights else None).float().eval()
    with torch.no_grad():
        outputs = flatten_outputs(model(torch.from_numpy(batch)), meta.output_names)
    return {name: np.ascontiguousarray(t.numpy(), dtype=np.float32) for name, t in outputs.items()}


def detector_reference_inputs(meta, detector, images: Sequence[Path], batch: int, shape: tuple[int, int],
                              seed: int) -> tuple[dict[str, np.ndarray], Optional[int]]:
    """A detector's ``images`` and ``image_sizes``: ``images`` read, resized and preprocessed as
    ``deformrt predict`` does, else ``batch`` random images a few pixels smaller than ``shape``
    (so clipping to the unpadded size matters), padded to it."""
    from exporter.evaluation.inputs import preprocess, random_images
    from exporter.evaluation.inputs import read_image
    from exporter.evaluation.predict import resize_image, resized_size

    height, width = shape
    if images:
        pixels = []
        for path in images:
            image = read_image(Path(path))
            size = resized_size(*image.shape[:2], detector.min_size_test, detector.max_size_test)
            pixels.append(resize_image(image, *size).astype(np.float64))
        seed = None
    else:
        pixels = random_images(batch, max(1, height - 3), max(1, width - 7), seed)
    sizes = np.array([p.shape[:2] for p in pixels], np.int32)
    batch_ = preprocess(pixels, meta)
    if not images:
        padded = np.zeros((len(pixels), 3, height, width), np.float32)
        padded[:, :, :batch_.shape[2], :batch_.shape[3]] = batch_
        batch_ = padded
    return {"images": np.ascontiguousarray(batch_, np.float32), "image_sizes": sizes}, seed


def ort_references(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime's (CPU, fp32) outputs of ``model`` on ``inputs``, by output name, in the model's order."""
    from exporter.evaluation.ort import ort_session

    session = ort_session(model, "cpu")
    names = [o.name for o in session.get_outputs()]
    return {name: np.ascontiguousarray(value) for name, value in zip(names, session.run(None, inputs))}


def detector_thresholds(meta, detector) -> tuple[float, float]:
    """The score and NMS IoU thresholds the detector's config applies to its detections (those of
    ``deformrt compare``: :func:`exporter.evaluation.detector_compare.detector_cuts`)."""
    from exporter.evaluation.detector_compare import detector_cuts

    cuts = detector_cuts(meta.config, detector.kind, detector.detections)
    return cuts.score_threshold, cuts.nms_iou


def detector_conf(detector, score_threshold: float = 0.0, nms_threshold: float = 0.0) -> dict[str, str]:
    """deploy.conf's detector keys (empty for a backbone: ``detector`` None)."""
    keys = ("detector_kind", "classes", "detections", "mask_size", "score_threshold", "nms_threshold",
            *(f"{key}_{p}" for p in layout.PRECISIONS for key in layout.DETECTION_TOLERANCES[p]))
    if detector is None:
        return {"model": "backbone", **{k: "" for k in keys}}
    return {"model": "detector", "detector_kind": detector.kind, "classes": str(detector.num_classes),
            "detections": str(detector.detections),
            "mask_size": str(detector.mask_size if detector.kind == "mask_rcnn" else 0),
            "score_threshold": repr(score_threshold), "nms_threshold": repr(nms_threshold),
            **{f"{key}_{p}": repr(value) for p in layout.PRECISIONS
               for key, value in layout.DETECTION_TOLERANCES[p].items()}}


def _trtexec_shapes(profiles, label: str) -> str:
    """trtexec's ``name:NxCxHxW,name:NxM`` for one of min/opt/max."""
    from exporter.trt.profiles import format_shape

    return ",".join(f"{p.name}:{format_shape(getattr(p, label))}" for p in profiles)


# ----------------------------------------------------------------------------------------------
# The whole job


def make_bundle(onnx_path: Path, output: Path, options: DeployOptions = DeployOptions(), force: bool = False,
                progress: Optional[Progress] = None) -> BundleResult:
    """Write the deployment bundle for ``onnx_path`` to the folder ``output`` (module docstring).
    User errors (missing or non-deformrt ONNX, existing output without ``force``, bad shapes,
    missing checkpoint) are DeformRTError, raised before anything slow runs."""
    import onnx
    import torch

    from exporter.evaluation.compare import TOLERANCES, make_inputs, single_input
    from exporter.onnx.metadata import DETECTOR_KEY, DetectorMetadata
    from exporter.onnx.passes import is_onnx_deform_conv, is_plugin_deform_conv
    from exporter.trt.build import load_onnx
    from exporter.trt.profiles import ShapeProfile, check_in_profile, format_shape, input_dims, resolve_profiles
    from exporter.util.fsutil import atomic_directory, check_output_directory, sha256_file
    from models.native import PLUGINS_DIR

    progress = progress or Progress.quiet()
    onnx_path, output = Path(onnx_path), Path(output)
    if options.precision not in layout.PRECISIONS:
        raise DeformRTError(f"precision must be one of {', '.join(layout.PRECISIONS)}, got {options.precision!r}")
    check_output_directory(output, force)  # before anything slow: exists, parent missing or read-only
    plugins_dir = Path(options.plugins_dir or PLUGINS_DIR)
    deploy_sources = _deploy_sources(plugins_dir)
    if options.weights is not None:
        require_file(options.weights, "checkpoint")
    seconds = {}
    start = time.perf_counter()
    model, meta = load_onnx(onnx_path)  # no progress line yet: user errors stay one line
    detector = DetectorMetadata.from_model(model)
    # a detector's references come from ONNX Runtime on the file itself: its weights are in it
    if detector is None and meta.seed is None and options.weights is None:
        raise DeformRTError(f"this model was exported with weights from {meta.weights}; pass that checkpoint with "
                            f"--weights so PyTorch can compute the references")
    if detector is None:
        input_name, input_dims_ = single_input(model)
        dims = {input_name: input_dims_}
    else:
        dims = input_dims(model)
        if tuple(dims) != layout.DETECTOR_INPUTS:
            raise DeformRTError(f"{onnx_path} is a detector file with inputs {', '.join(dims)}; deformrt deploy "
                                f"expects {', '.join(layout.DETECTOR_INPUTS)} (export it again with deformrt export "
                                f"--detector)")
        input_name = layout.DETECTOR_INPUTS[0]
    static = all(isinstance(d, int) for d in dims[input_name])
    (profile,) = resolve_profiles({input_name: dims[input_name]}, meta.export_shape, meta.size_divisibility,
                                  meta.dynamic_axes, options.min_shape, options.opt_shape, options.max_shape)
    profiles = [profile]
    if detector is None:
        batch, seed = make_inputs(meta, options.images, batch=profile.opt[0], shape=tuple(profile.opt[2:4]),
                                  seed=options.seed)
        inputs = {input_name: batch}
    else:
        # image_sizes follows the images' batch dimension
        profiles.append(ShapeProfile(layout.DETECTOR_INPUTS[1], *((getattr(profile, k)[0], 2)
                                                                   for k in ("min", "opt", "max"))))
        inputs, seed = detector_reference_inputs(meta, detector, options.images, profile.opt[0],
                                                 tuple(profile.opt[2:4]), options.seed)
        batch = inputs[input_name]
    for p in profiles:
        check_in_profile(p, inputs[p.name].shape)
    dcn_nodes = sum(1 for n in model.graph.node if is_plugin_deform_conv(n) or is_onnx_deform_conv(n))

    with progress.step("making the plugin and standard-DeformConv flavours in fp32 and mixed fp16"):
        flavours = model_flavours(model, meta, detector is not None)
        del model
    if detector is None:
        with progress.step(f"computing PyTorch fp32 references at {format_shape(batch.shape)}"):
            references = torch_references(meta, options.weights, batch)
        reference_by = f"PyTorch {torch.__version__.split('+')[0]} fp32 CPU"
    else:
        import onnxruntime

        with progress.step(f"computing ONNX Runtime fp32 detections at {format_shape(batch.shape)}"):
            references = ort_references(flavours[layout.onnx_model("onnx", "fp32")], inputs)
        reference_by = f"ONNX Runtime {onnxruntime.__version__} fp32 CPU"
    seconds["prepare"] = time.perf_counter() - start

    conf = {
        "format": str(layout.CONF_FORMAT),
        "deformrt_version": __version__,
        "body": meta.body,
        "weights": meta.weights,
        "tensorrt_majors": " ".join(map(str, layout.TENSORRT_MAJORS)),
        "precision": options.precision,
        **detector_conf(detector, *(detector_thresholds(meta, detector) if detector else ())),
        "inputs": " ".join(inputs),
        "outputs": " ".join(references),
        # trtexec takes no shapes for a static model
        **{f"{label}_shapes": "" if static else _trtexec_shapes(profiles, label) for label in ("min", "opt", "max")},
        **{f"tolerance_{p}": repr(TOLERANCES[p]) for p in layout.PRECISIONS},
        "reference_shape": format_shape(batch.shape),
        "reference_source": "images" if options.images else "random",
        "reference_seed": "" if seed is None else str(seed),
        "reference_images": " ".join(Path(p).name for p in options.images),
        "reference_by": reference_by,
    }
    start = time.perf_counter()
    with atomic_directory(output, force) as tmp, progress.step(f"writing {output}"):
        (tmp / layout.ONNX_DIR).mkdir()
        for name in list(flavours):
            onnx.save_model(flavours.pop(name), str(tmp / name))
        for directory, arrays in ((layout.REFERENCE_INPUTS, inputs), (layout.REFERENCE_OUTPUTS, references)):
            (tmp / directory).mkdir(parents=True)
            for name, array in arrays.items():
                # float tensors as float32, integer ones (image_sizes, num_detections, classes) as they are
                kept = array.dtype if np.issubdtype(array.dtype, np.integer) else np.float32
                np.save(tmp / directory / f"{name}.npy", np.ascontiguousarray(array, dtype=kept))
        copy_plugin_project(plugins_dir, tmp / layout.PLUGINS_DIR)
        copy_device_python(tmp / layout.PYTHON_DIR)
        for source, target in deploy_sources.items():
            shutil.copyfile(source, tmp / target)
            shutil.copymode(source, tmp / target)
        readme = tmp / layout.README
        readme.write_text(readme.read_text(encoding="utf-8").replace(layout.README_BUNDLE_MARKER, output.name),
                          encoding="utf-8")
        build_script = tmp / layout.BUILD_SCRIPT
        build_script.chmod(build_script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        props = meta.to_props()
        if detector is not None:
            props[DETECTOR_KEY] = json.dumps(detector.to_dict(), sort_keys=True)
        (tmp / layout.METADATA).write_text(json.dumps(props, indent=2) + "\n", encoding="utf-8")
        (tmp / layout.CONF).write_text(
            f"# written by deformrt deploy {__version__} on "
            f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} from {onnx_path.name}\n"
            + "".join((f"# {comment}\n" if comment else "") + f"{key}={conf[key]}\n"
                      for key, comment in layout.CONF_KEYS.items()), encoding="utf-8")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / layout.CHECKSUMS).write_text("".join(f"{sha256_file(tmp / f)}  {f}\n" for f in files),
                                            encoding="utf-8")
        files.append(layout.CHECKSUMS)
        size = sum((tmp / f).stat().st_size for f in files)
    seconds["write"] = time.perf_counter() - start
    return BundleResult(output.resolve(), conf, profile, sorted(files), size, dcn_nodes, seconds)
