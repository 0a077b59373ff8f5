"""`deformrt synthetic-checkpoint`: a thin command over :mod:`exporter.evaluation.synthetic`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from exporter.cli import options as o
from exporter.cli.export import MODEL_CONTEXT, BodyArg, ConfigFileOpt, OptsArg, body_and_opts


def register(app: typer.Typer) -> None:
    """Add ``synthetic-checkpoint`` to ``app``."""

    @app.command(
        "synthetic-checkpoint",
        context_settings=MODEL_CONTEXT,
        epilog="Example: deformrt synthetic-checkpoint R-101-FPN -o r101-synthetic.pth MODEL.RESNETS.STAGE_WITH_DCN "
               "'(False, True, True, True)' MODEL.RESNETS.WITH_MODULATED_DCN True, then deformrt export R-101-FPN "
               "--onnx --weights r101-synthetic.pth with the same KEY VALUE pairs.",
    )
    def synthetic_checkpoint_cmd(
        body: BodyArg = None,
        opts: OptsArg = None,
        output: Annotated[Optional[Path], o.output_option(
            "Checkpoint to write (default: BODY-synthetic.pth in the current directory).")] = None,
        config_file: ConfigFileOpt = None,
        seed: Annotated[int, typer.Option("--seed", metavar=o.N, help="Seed of the random weights.")] = 0,
        offset_std: Annotated[float, typer.Option(
            "--offset-std", metavar=o.X, help="Standard deviation of the DCN offsets, in pixels (a trained "
                                              "model's: about 2).")] = 2.0,
        shape: Annotated[str, typer.Option(
            "--shape", metavar=o.HW, help="Size of the random image the offsets are calibrated on.")] = "512x512",
        force: o.ForceOpt = False,
        as_json: o.JsonFlag = False,
    ) -> None:
        """Save seeded random weights with a trained model's DCN offset scale (what `make demo` exports), for a
        clean export check without trained weights."""
        from exporter.evaluation.synthetic import make_synthetic_checkpoint
        from exporter.util.progress import Progress

        body, pairs = body_and_opts(body, opts, config_file)
        result = make_synthetic_checkpoint(body, output, config_file=config_file, opts=pairs, seed=seed,
                                           shape=o.parse_shape(shape), std_px=offset_std, force=force,
                                           progress=Progress())
        o.emit(as_json, result.to_dict, result.summary)
