"""Polygraphy argument groups for ``polygraphy run``: deformrt's defaults and its two runners.

Polygraphy parses argument groups in order, extensions last, so every Polygraphy group (model,
runner selection, data loader, TensorRT config) is parsed before these run. What they check is
checked at parse time, before any runner builds a model or an engine.
"""

from __future__ import annotations

from pathlib import Path

from polygraphy.logger import G_LOGGER
from polygraphy.tools.args import DataLoaderArgs, ModelArgs, RunnerSelectArgs, TrtConfigArgs, TrtLoadPluginsArgs
from polygraphy.tools.args import util as args_util
from polygraphy.tools.args.base import BaseArgs, BaseRunnerArgs
from polygraphy.tools.script import make_invocable

from exporter.onnx.metadata import DCN_OP_PLUGIN
from models.errors import DeformRTError

RUNNERS_MODULE = "exporter.polygraphy_ext.runners"
TORCH_DEVICES = ("cpu", "cuda")
ONNXRT_PROVIDERS = ("cpu", "cuda")


def _selected(arg_groups, opt: str) -> bool:
    return opt in arg_groups[RunnerSelectArgs].runners.keys()


def pixel_value_range(meta) -> tuple[float, float]:
    """The smallest and largest value preprocessing (:func:`exporter.evaluation.inputs.preprocess`)
    can give: black and white images through the model's scaling, mean and std."""
    import numpy as np

    from exporter.evaluation.inputs import preprocess

    side = max(meta.size_divisibility, 1)  # no padding, so every value comes from a pixel
    batch = preprocess([np.zeros((side, side, 3)), np.full((side, side, 3), 255.0)], meta)
    return float(batch.min()), float(batch.max())


class DeformrtModelArgs(BaseArgs):
    """
    deformrt Model: the defaults a model exported by deformrt gives to any runner.

    Depends on:

        - ModelArgs
        - RunnerSelectArgs
        - DataLoaderArgs
        - TrtConfigArgs: the default TensorRT profile follows the default input shape
        - TrtLoadPluginsArgs: TensorRT is imported before --plugins libraries are loaded
    """

    def add_parser_args_impl(self):
        self.group.add_argument(
            "--no-deformrt-defaults",
            help="On an ONNX model exported by deformrt (one with deformrt metadata), deformrt sets two defaults: "
            "without --input-shapes, the input shape is the export shape (and the TensorRT profile, unless "
            "--trt-*-shapes are given), and without --val-range, random inputs span the values preprocessing can "
            "give (0..255 pixels after the model's channel scaling, mean and std). This option keeps Polygraphy's "
            "own defaults instead. For preprocessed real or random images, write an inputs file with "
            "`python -m exporter.polygraphy_ext.inputs MODEL -o inputs.json` and pass --load-inputs inputs.json",
            action="store_false",
            dest="deformrt_defaults",
            default=True,
        )

    def parse_impl(self, args):
        """
        Parses command-line arguments and populates the following attributes:

        Attributes:
            meta (ExportMetadata): The model's deformrt metadata, or None.
            metadata_error (str): Why there is none (a model deformrt did not write, no ONNX model).
            input_name (str): The model's single input, or None.
        """
        self.meta = None
        self.metadata_error = "no ONNX model was given"
        self.input_name = None
        self._load_tensorrt_before_plugins()
        model_args = self.arg_groups[ModelArgs]
        if not model_args.path or model_args.model_type is None or not model_args.model_type.is_onnx():
            return
        self._read_model(model_args.path)
        if self.meta is None or self.input_name is None:
            return
        self._check_input_shapes(model_args.input_shapes)
        if _selected(self.arg_groups, "onnxrt") and self.meta.dcn_op == DCN_OP_PLUGIN:
            G_LOGGER.warning("--onnxrt cannot run this model's deformrt.DeformConv2d nodes (the plugin flavour); "
                             "--deformrt-onnxrt runs them, rewritten to standard DeformConv in memory")
        if args_util.get(args, "deformrt_defaults", default=True):
            # Reported on the log unless a script is generated: the script shows them, and with
            # `--gen-script -` the log shares stdout with it.
            self._report = G_LOGGER.info if not args_util.get(args, "gen_script") else (lambda message: None)
            self._set_default_shapes(model_args)
            self._set_default_val_range()

    def _read_model(self, path: str) -> None:
        from exporter.onnx.metadata import ExportMetadata, read_onnx
        from exporter.trt.profiles import input_dims

        try:
            model = read_onnx(Path(path), load_external_data=False)
        except DeformRTError as exc:  # Polygraphy's loaders report it later
            self.metadata_error = str(exc)
            return
        try:
            self.meta = ExportMetadata.from_model(model)
        except DeformRTError as exc:
            self.metadata_error = f"{path}: {exc}"
            return
        inputs = input_dims(model)
        if len(inputs) == 1:
            self.input_name = next(iter(inputs))

    def _load_tensorrt_before_plugins(self) -> None:
        """Import TensorRT now when ``--trt --plugins`` will load libraries: Polygraphy loads them with
        ctypes before it first touches TensorRT, and our self-registering plugin file finds
        ``libnvinfer.so.<major>`` by its soname, which a pip-installed TensorRT satisfies only once
        loaded (plugins/src/pluginAutoload.cpp)."""
        import importlib.util

        if TrtLoadPluginsArgs not in self.arg_groups or not _selected(self.arg_groups, "trt"):
            return
        if self.arg_groups[TrtLoadPluginsArgs].plugins and importlib.util.find_spec("tensorrt") is not None:
            import tensorrt  # noqa: F401

    def _check_input_shapes(self, input_shapes) -> None:
        """The model's height and width must be multiples of its size divisibility (FPN bodies)."""
        div = self.meta.size_divisibility
        if self.input_name not in input_shapes or div <= 1:
            return
        shape = input_shapes[self.input_name].shape
        if len(shape) != 4 or any(not isinstance(d, int) or d % div for d in shape[2:]):
            G_LOGGER.critical(f"--input-shapes {self.input_name}:{list(shape)}: this deformrt model takes "
                              f"[N, 3, H, W] with H and W multiples of {div}")

    def _set_default_shapes(self, model_args) -> None:
        """Without --input-shapes, the export shape for what would otherwise make dynamic dims 1:
        random inputs and (with --trt, without --trt-*-shapes) the TensorRT profile."""
        if len(model_args.input_shapes):
            return
        random_inputs = self.arg_groups[DataLoaderArgs].is_using_random_data()
        trt_profile = (_selected(self.arg_groups, "trt") and TrtConfigArgs in self.arg_groups
                       and not self.arg_groups[TrtConfigArgs].profile_dicts)
        if not random_inputs and not trt_profile:
            return
        shape = list(self.meta.export_shape)
        model_args.input_shapes.add(self.input_name, dtype=None, shape=shape)
        if trt_profile:
            from polygraphy.tools.args.backend.trt.config import parse_profile_shapes

            # TrtConfigArgs turned the (then empty) input shapes into profiles before this group ran.
            self.arg_groups[TrtConfigArgs].profile_dicts = parse_profile_shapes(model_args.input_shapes, [], [], [])
        uses = " and ".join(what for what, used in (("random inputs", random_inputs),
                                                    ("the TensorRT profile", trt_profile)) if used)
        self._report(f"deformrt: {uses} of shape {self.input_name}:{shape} (the export shape; --input-shapes "
                     f"overrides it)")

    def _set_default_val_range(self) -> None:
        loader = self.arg_groups[DataLoaderArgs]
        if loader.val_range is not None or not loader.is_using_random_data():
            return
        low, high = pixel_value_range(self.meta)
        loader.val_range = {self.input_name: (round(low, 4), round(high, 4))}
        self._report(f"deformrt: --val-range {self.input_name}:[{low:.4g},{high:.4g}] (what preprocessing gives "
                      f"pixels 0..255; --val-range overrides it)")


class DeformrtTorchRunnerArgs(BaseRunnerArgs):
    """
    deformrt PyTorch Runner: running the PyTorch model a deformrt export was made from.

    Depends on:

        - ModelArgs
        - RunnerSelectArgs
        - DeformrtModelArgs
    """

    def get_name_opt_impl(self):
        return "deformrt PyTorch", "deformrt-torch"

    def get_extra_help_text_impl(self):
        return ("The model is rebuilt from the ONNX file's deformrt metadata (see 'deformrt PyTorch Runner' "
                "options); it reads the same inputs as the ONNX model.")

    def add_parser_args_impl(self):
        self.group.add_argument(
            "--deformrt-weights",
            metavar="CHECKPOINT",
            help="The checkpoint the model was exported with (its SHA-256 must match the one recorded). "
            "Not needed for a model exported with random weights: those are rebuilt from the recorded seed",
            default=None,
        )
        self.group.add_argument(
            "--deformrt-torch-device",
            choices=TORCH_DEVICES,
            help="Where PyTorch runs the model. Default: cpu",
            default="cpu",
        )
        self.group.add_argument(
            "--deformrt-torch-precision",
            choices=("fp32", "fp64"),
            help="The precision of the PyTorch model, its inputs and outputs. fp64 gives a reference "
            "whose own rounding error is negligible. Default: fp32",
            default="fp32",
        )

    def parse_impl(self, args):
        """
        Parses command-line arguments and populates the following attributes:

        Attributes:
            weights (str): The checkpoint, or None.
            device (str): The PyTorch device.
            precision (str): fp32 or fp64.
        """
        self.weights = args_util.parse_path(args_util.get(args, "deformrt_weights"), "Checkpoint")
        self.device = args_util.get(args, "deformrt_torch_device")
        self.precision = args_util.get(args, "deformrt_torch_precision")
        if not _selected(self.arg_groups, "deformrt-torch"):
            return
        model = self.arg_groups[DeformrtModelArgs]
        if model.meta is None:
            G_LOGGER.critical(f"--deformrt-torch needs an ONNX model exported by deformrt: {model.metadata_error}")
        try:
            model.meta.check_rebuild_weights(self.weights)
        except DeformRTError as exc:
            G_LOGGER.critical(f"--deformrt-torch: {exc}{' (--deformrt-weights)' if self.weights is None else ''}")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                G_LOGGER.critical("--deformrt-torch-device cuda: PyTorch sees no CUDA device here")

    def add_to_script_impl(self, script):
        script.add_import(imports=["deformrt_torch_runner"], frm=RUNNERS_MODULE)
        script.add_runner(make_invocable("deformrt_torch_runner", self.arg_groups[ModelArgs].path,
                                         weights=self.weights, device=self.device, precision=self.precision))


class DeformrtOnnxrtRunnerArgs(BaseRunnerArgs):
    """
    deformrt ONNX-Runtime Runner: running deformrt models of either DCN flavour with ONNX-Runtime.

    Depends on:

        - ModelArgs
    """

    def get_name_opt_impl(self):
        return "deformrt ONNX-Runtime", "deformrt-onnxrt"

    def get_extra_help_text_impl(self):
        return ("Unlike --onnxrt, it also runs the plugin flavour: deformrt.DeformConv2d is rewritten to standard "
                "DeformConv in memory (the file is untouched).")

    def add_parser_args_impl(self):
        self.group.add_argument(
            "--deformrt-onnxrt-provider",
            choices=ONNXRT_PROVIDERS,
            help="The ONNX-Runtime execution provider (cuda falls back to cpu for nodes it lacks). Default: cpu",
            default="cpu",
        )

    def parse_impl(self, args):
        """
        Parses command-line arguments and populates the following attributes:

        Attributes:
            provider (str): cpu or cuda.
        """
        self.provider = args_util.get(args, "deformrt_onnxrt_provider")
        model_args = self.arg_groups[ModelArgs]
        if _selected(self.arg_groups, "deformrt-onnxrt") and model_args.path and (
                model_args.model_type is None or not model_args.model_type.is_onnx()):
            G_LOGGER.critical(f"--deformrt-onnxrt runs ONNX models; {model_args.path} is a {model_args.model_type} "
                              f"model")

    def add_to_script_impl(self, script):
        script.add_import(imports=["deformrt_onnxrt_runner"], frm=RUNNERS_MODULE)
        script.add_runner(make_invocable("deformrt_onnxrt_runner", self.arg_groups[ModelArgs].path,
                                         provider=self.provider))
