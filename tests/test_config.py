"""models.config: upstream defaults, presets, YAML files, KEY VALUE opts and every error path."""

from __future__ import annotations

import logging

import pytest

from models.backbone import list_bodies
from models.config import CfgNode, bundled_configs, get_cfg
from models.errors import DeformRTError

# maskrcnn-benchmark's config/defaults.py values for the keys we carry (facts sheet, section 4).
UPSTREAM_DEFAULTS = {
    "MODEL.BACKBONE.CONV_BODY": "R-50-C4",
    "MODEL.BACKBONE.FREEZE_CONV_BODY_AT": 2,
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.TRANS_FUNC": "BottleneckWithFixedBatchNorm",
    "MODEL.RESNETS.STEM_FUNC": "StemWithFixedBatchNorm",
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS": 1024,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.STAGE_WITH_DCN": (False, False, False, False),
    "MODEL.RESNETS.WITH_MODULATED_DCN": False,
    "MODEL.RESNETS.DEFORMABLE_GROUPS": 1,
    "MODEL.FPN.USE_GN": False,
    "MODEL.FPN.USE_RELU": False,
    "MODEL.GROUP_NORM.DIM_PER_GP": -1,
    "MODEL.GROUP_NORM.NUM_GROUPS": 32,
    "MODEL.GROUP_NORM.EPSILON": 1e-5,
    "MODEL.RETINANET.USE_C5": True,
    "INPUT.PIXEL_MEAN": [102.9801, 115.9465, 122.7717],
    "INPUT.PIXEL_STD": [1.0, 1.0, 1.0],
    "INPUT.TO_BGR255": True,
    "DATALOADER.SIZE_DIVISIBILITY": 0,
}


def flat(cfg) -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, CfgNode):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        else:
            out[key] = value
    return out


def error_of(**kwargs) -> str:
    with pytest.raises(DeformRTError) as info:
        get_cfg(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------
# Defaults, presets, the node


def test_defaults_are_upstreams():
    values = flat(get_cfg())
    assert values == UPSTREAM_DEFAULTS
    for key, value in UPSTREAM_DEFAULTS.items():  # kinds too: tuples stay tuples, lists lists
        assert type(values[key]) is type(value), key


@pytest.mark.parametrize("body", list_bodies())
def test_presets(body):
    cfg = get_cfg(body)
    fpn = "FPN" in body
    assert cfg.MODEL.BACKBONE.CONV_BODY == body
    assert cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == (256 if fpn else 1024)
    assert cfg.DATALOADER.SIZE_DIVISIBILITY == (32 if fpn else 0)
    rest = {k: v for k, v in flat(cfg).items()
            if k not in ("MODEL.BACKBONE.CONV_BODY", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
                         "DATALOADER.SIZE_DIVISIBILITY")}
    assert all(UPSTREAM_DEFAULTS[k] == v for k, v in rest.items())


def test_cfg_is_frozen_with_attribute_and_item_access():
    cfg = get_cfg("R-50-FPN")
    assert cfg.is_frozen() and cfg.MODEL.RESNETS.is_frozen()
    assert cfg["MODEL"]["RESNETS"]["NUM_GROUPS"] is cfg.MODEL.RESNETS.NUM_GROUPS
    with pytest.raises(AttributeError, match="frozen"):
        cfg.MODEL.RESNETS.NUM_GROUPS = 32
    with pytest.raises(AttributeError, match="frozen"):
        cfg.MODEL["FPN"] = {}
    with pytest.raises(AttributeError, match="NO_SUCH_KEY"):
        cfg.MODEL.NO_SUCH_KEY
    plain = cfg.to_dict()
    assert type(plain) is dict and type(plain["MODEL"]["RESNETS"]) is dict
    plain["MODEL"]["RESNETS"]["NUM_GROUPS"] = 32  # a copy: the config is untouched
    assert cfg.MODEL.RESNETS.NUM_GROUPS == 1


def test_unfrozen_node_can_be_built_and_edited():
    node = CfgNode({"A": {"B": 1}})
    node.A.B = 2
    node["C"] = {"D": (1, 2)}
    assert isinstance(node.C, CfgNode) and node.to_dict() == {"A": {"B": 2}, "C": {"D": (1, 2)}}
    assert node.freeze() is node and node.A.is_frozen()


def test_dump_reads_back_equal(tmp_path, caplog):
    cfg = get_cfg("R-101-FPN-RETINANET", opts=[
        "MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, False, True)", "MODEL.RESNETS.WITH_MODULATED_DCN", "True",
        "MODEL.GROUP_NORM.EPSILON", "1e-6", "MODEL.RETINANET.USE_C5", "False", "INPUT.PIXEL_MEAN", "[1, 2.5, 3]"])
    text = cfg.dump()
    assert "STAGE_WITH_DCN: [false, true, false, true]" in text
    with caplog.at_level(logging.WARNING):
        again = get_cfg(config_file=write(tmp_path, text))
    assert again == cfg and flat(again) == flat(cfg)
    assert type(again.MODEL.RESNETS.STAGE_WITH_DCN) is tuple
    assert not caplog.records  # a dump has nothing to ignore


# ------------------------------------------------------------------------------------------------
# Files


def test_bundled_configs_load_and_report_ignored_sections_in_one_line(caplog):
    assert {"e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml", "e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml",
            "e2e_mask_rcnn_R_50_FPN_1x_gn.yaml"} <= set(bundled_configs())
    with caplog.at_level(logging.WARNING, logger="models.config"):
        dconv = get_cfg(config_file="e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml")
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "\n" not in line and "e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml" in line
    for ignored in ("MODEL.META_ARCHITECTURE", "MODEL.RPN", "MODEL.ROI_HEADS", "MODEL.MASK_ON", "DATASETS", "SOLVER"):
        assert ignored in line
    for used in ("RESNETS", "BACKBONE", "DATALOADER", "ANCHOR_STRIDE"):  # children of ignored sections not listed
        assert used not in line
    assert dconv.MODEL.BACKBONE.CONV_BODY == "R-50-FPN"
    assert dconv.MODEL.RESNETS.STAGE_WITH_DCN == (False, True, True, True)
    assert dconv.MODEL.RESNETS.WITH_MODULATED_DCN is False
    assert dconv.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 256 and dconv.DATALOADER.SIZE_DIVISIBILITY == 32

    mdconv = get_cfg(config_file="e2e_mask_rcnn_mdconv_R_50_FPN_1x")  # ".yaml" optional
    assert mdconv.MODEL.RESNETS.WITH_MODULATED_DCN is True
    assert flat(mdconv) == {**flat(dconv), "MODEL.RESNETS.WITH_MODULATED_DCN": True}

    gn = get_cfg(config_file="e2e_mask_rcnn_R_50_FPN_1x_gn.yaml")
    assert (gn.MODEL.RESNETS.STEM_FUNC, gn.MODEL.RESNETS.TRANS_FUNC) == ("StemWithGN", "BottleneckWithGN")
    assert gn.MODEL.FPN.USE_GN is True and gn.MODEL.RESNETS.STRIDE_IN_1X1 is False


def test_partially_known_sections_keep_their_backbone_keys(caplog):
    with caplog.at_level(logging.WARNING, logger="models.config"):
        cfg = get_cfg(config_file="retinanet_X_101_32x8d_FPN_1x.yaml")
    assert (cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP) == (32, 8)
    assert cfg.MODEL.RETINANET.USE_C5 is True
    line = caplog.records[0].getMessage()
    assert "MODEL.RETINANET.NUM_CLASSES" in line and "INPUT.MIN_SIZE_TRAIN" in line
    assert "USE_C5" not in line


def test_yaml_values_are_decoded_like_yacs(tmp_path):
    path = write(tmp_path, """
MODEL:
  BACKBONE: {CONV_BODY: R-101-C5}
  RESNETS:
    STAGE_WITH_DCN: [false, true, false, true]   # a YAML list for a tuple key
    NUM_GROUPS: "8"                              # a quoted Python literal
    WIDTH_PER_GROUP: 4
  GROUP_NORM:
    EPSILON: 1e-3                                # YAML 1.1 reads this as a string
  FPN:                                           # an empty section
INPUT:
  PIXEL_STD: [57, 57.5, 58]                      # ints accepted for floats
""")
    cfg = get_cfg(config_file=path)
    assert cfg.MODEL.RESNETS.STAGE_WITH_DCN == (False, True, False, True)
    assert type(cfg.MODEL.RESNETS.STAGE_WITH_DCN) is tuple
    assert cfg.MODEL.RESNETS.NUM_GROUPS == 8
    assert cfg.MODEL.GROUP_NORM.EPSILON == 1e-3
    assert cfg.INPUT.PIXEL_STD == [57.0, 57.5, 58.0] and all(type(v) is float for v in cfg.INPUT.PIXEL_STD)
    assert cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 1024  # a file gets no preset


def test_conv_body_preset_applies_after_the_file_and_opts_after_both():
    cfg = get_cfg("R-50-C4", config_file="e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml",
                  opts=["MODEL.RESNETS.DEFORMABLE_GROUPS", "2"])
    assert cfg.MODEL.BACKBONE.CONV_BODY == "R-50-C4"
    assert cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 1024 and cfg.DATALOADER.SIZE_DIVISIBILITY == 0
    assert cfg.MODEL.RESNETS.STAGE_WITH_DCN == (False, True, True, True)  # the file's, kept
    assert cfg.MODEL.RESNETS.DEFORMABLE_GROUPS == 2
    cfg = get_cfg("R-50-FPN", opts=["MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "128"])
    assert cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 128


# ------------------------------------------------------------------------------------------------
# opts


@pytest.mark.parametrize("key,value,expected", [
    ("MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)", (False, True, True, True)),
    ("MODEL.RESNETS.STAGE_WITH_DCN", "[True, False, False, True]", (True, False, False, True)),
    ("MODEL.RESNETS.STAGE_WITH_DCN", (False, False, True, True), (False, False, True, True)),
    ("MODEL.RESNETS.WITH_MODULATED_DCN", "True", True),
    ("MODEL.RESNETS.WITH_MODULATED_DCN", False, False),
    ("MODEL.RESNETS.STEM_FUNC", "'StemWithGN'", "StemWithGN"),
    ("MODEL.RESNETS.STEM_FUNC", "StemWithGN", "StemWithGN"),
    ("MODEL.RESNETS.NUM_GROUPS", "32", 32),
    ("MODEL.RESNETS.NUM_GROUPS", 4, 4),
    ("MODEL.GROUP_NORM.EPSILON", "1", 1.0),
    ("MODEL.GROUP_NORM.EPSILON", "1e-6", 1e-6),
    ("MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "-1", -1),
    ("INPUT.PIXEL_MEAN", "(0.485, 0.456, 0.406)", [0.485, 0.456, 0.406]),
    ("MODEL.BACKBONE.CONV_BODY", "R-101-FPN", "R-101-FPN"),
])
def test_opts_values_parse_like_yacs(key, value, expected):
    got = flat(get_cfg(opts=[key, value]))[key]
    assert got == expected and type(got) is type(expected)


def test_opts_conv_body_gets_no_preset():
    cfg = get_cfg(opts=("MODEL.BACKBONE.CONV_BODY", "R-50-FPN"))
    assert cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 1024  # exactly what upstream's merge_from_list gives


# ------------------------------------------------------------------------------------------------
# Errors: one line, naming the key


@pytest.mark.parametrize("opts,needles", [
    (["MODEL.RESNETS.STAGE_WITH_DNC", "(False,)"], ["'MODEL.RESNETS.STAGE_WITH_DNC'",
                                                    "did you mean 'MODEL.RESNETS.STAGE_WITH_DCN'"]),
    (["MODEL.RESNET.NUM_GROUPS", "32"], ["did you mean 'MODEL.RESNETS.NUM_GROUPS'"]),
    (["SOLVER.BASE_LR", "0.01"], ["unknown config key 'SOLVER.BASE_LR'", "MODEL.RESNETS.*"]),
    (["MODEL.RESNETS", "1"], ["MODEL.RESNETS is a config section", "MODEL.RESNETS.NUM_GROUPS"]),
    (["MODEL.RESNETS.NUM_GROUPS"], ["KEY VALUE pairs", "odd"]),
    ([3, "4"], ["a key must be a string"]),
    (["MODEL.RESNETS.NUM_GROUPS", "'a'"], ["MODEL.RESNETS.NUM_GROUPS: expected an integer", "'a'"]),
    (["MODEL.RESNETS.NUM_GROUPS", "2.0"], ["MODEL.RESNETS.NUM_GROUPS: expected an integer"]),
    (["MODEL.RESNETS.NUM_GROUPS", True], ["MODEL.RESNETS.NUM_GROUPS: expected an integer"]),
    (["MODEL.RESNETS.WITH_MODULATED_DCN", "1"], ["MODEL.RESNETS.WITH_MODULATED_DCN: expected a boolean"]),
    (["MODEL.RESNETS.STEM_FUNC", "3"], ["MODEL.RESNETS.STEM_FUNC: expected a string"]),
    (["MODEL.GROUP_NORM.EPSILON", "'small'"], ["MODEL.GROUP_NORM.EPSILON: expected a number"]),
    (["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True)"],
     ["MODEL.RESNETS.STAGE_WITH_DCN: expected a tuple of 4 booleans"]),
    (["MODEL.RESNETS.STAGE_WITH_DCN", "(0, 1, 1, 1)"], ["MODEL.RESNETS.STAGE_WITH_DCN: expected a tuple of 4"]),
    (["MODEL.RESNETS.STAGE_WITH_DCN", "True"], ["MODEL.RESNETS.STAGE_WITH_DCN: expected a tuple of 4"]),
    (["INPUT.PIXEL_MEAN", "[1, 2]"], ["INPUT.PIXEL_MEAN: expected a list of 3 numbers"]),
    (["MODEL.BACKBONE.CONV_BODY", "R-50-FNP"], ["MODEL.BACKBONE.CONV_BODY 'R-50-FNP'", "did you mean 'R-50-FPN'",
                                                 "R-152-FPN"]),
    (["MODEL.RESNETS.STEM_FUNC", "StemWithGn"], ["MODEL.RESNETS.STEM_FUNC", "did you mean 'StemWithGN'",
                                                  "StemWithFixedBatchNorm"]),
    (["MODEL.RESNETS.TRANS_FUNC", "Bottleneck"], ["MODEL.RESNETS.TRANS_FUNC 'Bottleneck'", "BottleneckWithGN"]),
    (["MODEL.GROUP_NORM.DIM_PER_GP", "16"], ["MODEL.GROUP_NORM.DIM_PER_GP=16", "MODEL.GROUP_NORM.NUM_GROUPS=32",
                                             "exactly one must be -1", "upstream"]),
    (["MODEL.GROUP_NORM.NUM_GROUPS", "-1"], ["MODEL.GROUP_NORM.DIM_PER_GP=-1", "exactly one must be -1"]),
    (["MODEL.GROUP_NORM.NUM_GROUPS", "0"], ["MODEL.GROUP_NORM.NUM_GROUPS=0"]),
    (["MODEL.GROUP_NORM.EPSILON", "0"], ["MODEL.GROUP_NORM.EPSILON must be > 0"]),
    (["MODEL.RESNETS.STEM_FUNC", "StemWithGN", "MODEL.GROUP_NORM.NUM_GROUPS", "24"],
     ["MODEL.GROUP_NORM.NUM_GROUPS=24 does not divide the 64 channels of MODEL.RESNETS.STEM_OUT_CHANNELS"]),
    (["MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN", "MODEL.GROUP_NORM.NUM_GROUPS", "-1",
      "MODEL.GROUP_NORM.DIM_PER_GP", "48"], ["MODEL.GROUP_NORM.DIM_PER_GP=48 does not divide the 64 channels",
                                             "res2 bottleneck"]),
    (["MODEL.BACKBONE.CONV_BODY", "R-50-FPN", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "100", "MODEL.FPN.USE_GN",
      "True"], ["does not divide the 100 channels of MODEL.RESNETS.BACKBONE_OUT_CHANNELS"]),
    (["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "5"], ["MODEL.BACKBONE.FREEZE_CONV_BODY_AT=5", "R-50-C4", "at most 4"]),
    (["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, False, False)", "MODEL.RESNETS.DEFORMABLE_GROUPS", "3"],
     ["MODEL.RESNETS.DEFORMABLE_GROUPS=3 does not divide the 128 channels of the res3 3x3 conv"]),
    (["MODEL.RESNETS.NUM_GROUPS", "0"], ["MODEL.RESNETS.NUM_GROUPS must be >= 1"]),
    (["MODEL.RESNETS.RES2_OUT_CHANNELS", "-256"], ["MODEL.RESNETS.RES2_OUT_CHANNELS must be >= 1"]),
    (["DATALOADER.SIZE_DIVISIBILITY", "-32"], ["DATALOADER.SIZE_DIVISIBILITY must be >= 0"]),
    (["INPUT.PIXEL_STD", "[1.0, 0.0, 1.0]"], ["INPUT.PIXEL_STD must not contain 0"]),
])
def test_opts_errors(opts, needles):
    message = error_of(opts=opts)
    for needle in needles:
        assert needle in message, (needle, message)


def test_allowed_combinations_are_not_errors():
    # GN blocks under a FrozenBN stem (and the reverse): upstream allows any mix.
    get_cfg(opts=["MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN"])
    get_cfg(opts=["MODEL.RESNETS.STEM_FUNC", "StemWithGN"])
    # Deformable groups only have to divide the stages that use DCN; C4 bodies have no res5.
    get_cfg(opts=["MODEL.RESNETS.DEFORMABLE_GROUPS", "3"])
    get_cfg("R-50-C4", opts=["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "4"])
    get_cfg("R-50-FPN", opts=["MODEL.BACKBONE.FREEZE_CONV_BODY_AT", "5"])


def test_bad_arguments():
    message = error_of(conv_body="R-50-FNP")
    assert "'R-50-FNP'" in message and "did you mean 'R-50-FPN'" in message
    assert "did you mean 'R-101-FPN'" in error_of(conv_body="r-101-fpn")
    assert "opts must be a list" in error_of(opts="MODEL.RESNETS.NUM_GROUPS 32")


@pytest.mark.parametrize("text,needles", [
    ("MODEL:\n  RESNETS:\n    STAGE_WITH_DNC: (False, True, True, True)\n",
     ["mine.yaml: unknown key MODEL.RESNETS.STAGE_WITH_DNC", "did you mean 'MODEL.RESNETS.STAGE_WITH_DCN'"]),
    ("MODEL:\n  FPN:\n    USE_GROUPNORM: True\n", ["mine.yaml: unknown key MODEL.FPN.USE_GROUPNORM"]),
    ("MODEL:\n  RESNETS: 3\n", ["mine.yaml: MODEL.RESNETS is a section"]),
    ("MODEL:\n  RESNETS:\n    NUM_GROUPS: {A: 1}\n", ["mine.yaml: MODEL.RESNETS.NUM_GROUPS is a key"]),
    ("MODEL:\n  RESNETS:\n    NUM_GROUPS: 1.5\n", ["mine.yaml: MODEL.RESNETS.NUM_GROUPS: expected an integer"]),
    ("MODEL:\n  RESNETS:\n    STAGE_WITH_DCN: (False, True)\n",
     ["mine.yaml: MODEL.RESNETS.STAGE_WITH_DCN: expected a tuple"]),
    ("MODEL:\n  BACKBONE:\n    CONV_BODY: R-50-FPM\n", ["did you mean 'R-50-FPN'"]),
    ("MODEL:\n  RESNETS: [1, 2\n", ["mine.yaml is not valid YAML at line 3"]),
    ("- MODEL\n", ["mine.yaml must hold a mapping", "list"]),
])
def test_file_errors(tmp_path, text, needles):
    message = error_of(config_file=write(tmp_path, text, "mine.yaml"))
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_file_lists_bundled_configs(tmp_path):
    message = error_of(config_file=tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message and "e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml" in message
