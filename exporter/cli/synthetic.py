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
               "--onnx --weights r101-synthetic.pth with the same KEY VALUE pairs. A whole detector: deformrt "
               "synthetic-checkpoint --config-file e2e_mask_rcnn_dconv_R_50_FPN_1x --detector.",
    )
    def synthetic_checkpoint_cmd(
        body: BodyArg = None,
        opts: OptsArg = None,
        output: Annotated[Optional[Path], o.output_option(
            "Checkpoint to write (default: BODY-synthetic.pth in the current directory; with --detector, the config "
            "file's name with -synthetic.pth).")] = None,
        config_file: ConfigFileOpt = None,
        seed: Annotated[int, typer.Option("--seed", metavar=o.N, **o.SEED_RANGE,
                                                      help="Seed of the random weights.")] = 0,
        offset_std: Annotated[float, typer.Option(
            "--offset-std", metavar=o.X, help="Standard deviation of the DCN offsets, in pixels (a trained "
                                              "model's: about 2).")] = 2.0,
        shape: Annotated[Optional[str], typer.Option(
            "--shape", metavar=o.HW, help="Size of the random images the weights are calibrated on (default: "
                                          "512x512; with --detector 256x320).")] = None,
        detector: Annotated[bool, typer.Option(
            "--detector", help="The whole detector of --config-file: its DCN offsets and its heads calibrated so "
                               "that it detects (what `deformrt export --detector` builds without --weights).")
        ] = False,
        force: o.ForceOpt = False,
        as_json: o.JsonFlag = False,
    ) -> None:
        """Save seeded random weights with a trained model's DCN offset scale (what `make demo` exports), for a
        clean export check without trained weights; with --detector, a whole detector that detects."""
        from exporter.evaluation.synthetic import make_synthetic_checkpoint
        from exporter.util.progress import Progress

        body, pairs = body_and_opts(body, opts, config_file, detector=detector)
        result = make_synthetic_checkpoint(body, output, config_file=config_file, opts=pairs, seed=seed,
                                           shape=o.parse_shape(shape), std_px=offset_std, force=force,
                                           progress=Progress(), detector=detector)
        o.emit(as_json, result.to_dict, result.summary)
