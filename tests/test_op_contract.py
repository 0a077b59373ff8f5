"""The op contract is defined once (exporter/onnx/op_contract.py); the plugin's header must match it."""

import re

import pytest

from exporter.onnx import op_contract as oc


def test_committed_header_matches_contract():
    assert oc.HEADER_PATH.exists(), "run: python -m exporter.onnx.op_contract --write-header"
    assert oc.HEADER_PATH.read_text() == oc.render_header(), (
        "plugins/include/deformrt/opContract.h drifted from exporter/onnx/op_contract.py; "
        "regenerate it with: python -m exporter.onnx.op_contract --write-header"
    )


def test_header_names_every_attribute_once():
    text = oc.render_header()
    names = re.findall(r'kAttr\w+ = "(\w+)"', text)
    assert names == list(oc.ATTRIBUTE_NAMES)
    assert f'kOpName = "{oc.OP_NAME}"' in text
    assert f'kPluginNamespace = "{oc.PLUGIN_NAMESPACE}"' in text


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("modulated", [False, True])
def test_input_layout(has_bias, modulated):
    names = oc.input_names(has_bias, modulated)
    assert names[:3] == ["X", "W", "offset"]
    assert ("B" in names) == has_bias and ("mask" in names) == modulated
    if has_bias:
        assert names.index("B") == 3
    if modulated:
        assert names.index("mask") == (4 if has_bias else 3)


def _good():
    return dict(kernel_shape=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1], dilations=[2, 1],
                group=2, offset_group=4, modulated=1, has_bias=0)


def test_validate_accepts_good_attributes():
    oc.validate_attributes(_good())


@pytest.mark.parametrize("name,value", [
    ("strides", [0, 1]), ("pads", [1, 1]), ("pads", [-1, 0, 0, 0]), ("dilations", [1]),
    ("group", 0), ("offset_group", 1.5), ("modulated", 2), ("has_bias", True), ("kernel_shape", [3, 0]),
])
def test_validate_rejects_bad_attribute_naming_it(name, value):
    attrs = _good()
    attrs[name] = value
    with pytest.raises(ValueError, match=name):
        oc.validate_attributes(attrs)


def test_validate_rejects_missing_attribute():
    attrs = _good()
    del attrs["offset_group"]
    with pytest.raises(ValueError, match="offset_group"):
        oc.validate_attributes(attrs)


def test_output_size_matches_conv_arithmetic():
    # 3x3, pad 1, stride 2 on 7 -> 4; dilation 2, pad 2 on 8 -> 8
    assert oc.output_size(7, 3, 2, 1, 1, 1) == 4
    assert oc.output_size(8, 3, 1, 2, 2, 2) == 8
