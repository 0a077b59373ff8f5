"""Shape profiles: parsing, defaults from the model, widening, validation, profile membership."""

import pytest
from onnx import TensorProto, helper

from exporter.trt.profiles import (DEFAULT_MAX_BATCH, DEFAULT_MAX_SIDE, DEFAULT_MIN_SIDE, ShapeProfile, check_in_profile,
                               default_profile, input_dims, parse_hw, parse_shapes, resolve_profiles)
from models.errors import DeformRTError

DYNAMIC = {"images": ["batch", 3, "height", "width"]}
AXES = {"images": {"0": "batch", "2": "height", "3": "width"}}


def test_input_dims_reads_static_and_symbolic_dims_and_skips_initializers():
    graph = helper.make_graph(
        [helper.make_node("Add", ["images", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", 64]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])])
    assert input_dims(helper.make_model(graph)) == {"images": ["batch", 3, "height", 64]}


def test_parse_shapes_named_unnamed_and_errors():
    assert parse_shapes("images:1x3x320x640", ["images"], "--min-shape") == {"images": (1, 3, 320, 640)}
    assert parse_shapes("2x3x64x64", ["images"], "--opt-shape") == {"images": (2, 3, 64, 64)}
    assert parse_shapes("a:1x2, b:3", ["a", "b"], "--max-shape") == {"a": (1, 2), "b": (3,)}
    for text, match in [("1x3x64", "inputs a, b"), ("c:1x3", "no input 'c'"), ("a:1x3x", "written like"),
                        ("a:1,a:2", "twice"), (" , ", "empty")]:
        with pytest.raises(DeformRTError, match=match):
            parse_shapes(text, ["a", "b"], "--min-shape")


def test_parse_hw():
    assert parse_hw("800x1344") == (800, 1344)
    for bad in ("800", "800x", "axb", "1x2x3"):
        with pytest.raises(DeformRTError, match="HxW"):
            parse_hw(bad)
    for bad in ("0x64", "-32x64"):  # well formed, not positive
        with pytest.raises(DeformRTError, match="height and width must be at least 1"):
            parse_hw(bad)


def test_defaults_for_a_dynamic_model():
    p = default_profile("images", DYNAMIC["images"], (1, 3, 256, 320), 32, AXES["images"])
    assert p == ShapeProfile("images", (1, 3, 256, 320), (1, 3, 256, 320), (DEFAULT_MAX_BATCH, 3, 1344, 1344))
    big = default_profile("images", DYNAMIC["images"], (2, 3, 1600, 800), 32, AXES["images"])
    assert big.min == (1, 3, DEFAULT_MIN_SIDE, DEFAULT_MIN_SIDE) and big.opt == (2, 3, 1600, 800)
    assert big.max == (DEFAULT_MAX_BATCH, 3, 1600, DEFAULT_MAX_SIDE)


def test_defaults_round_to_the_size_divisibility():
    p = default_profile("images", DYNAMIC["images"], (1, 3, 384, 384), 128)
    assert p.min[2:] == (256, 256) and p.max[2:] == (1408, 1408)  # 320 down, 1344 up to multiples of 128
    assert all(s % 128 == 0 for s in (*p.min[2:], *p.max[2:]))


def test_defaults_for_a_static_model_and_metadata_only_dynamic_axes():
    static = default_profile("images", [1, 3, 64, 96], (1, 3, 64, 96), 32)
    assert static.min == static.opt == static.max == (1, 3, 64, 96)
    # An axis listed as dynamic in the metadata is dynamic even if the graph shows a number.
    meta_dynamic = default_profile("images", [1, 3, 64, 96], (1, 3, 64, 96), 32, {"0": "batch"})
    assert meta_dynamic.min[0] == 1 and meta_dynamic.max[0] == DEFAULT_MAX_BATCH


def test_given_shapes_replace_defaults_and_widen_the_others():
    [p] = resolve_profiles(DYNAMIC, (1, 3, 256, 320), 32, AXES, opt_shape="1x3x1600x800")
    assert p.opt == (1, 3, 1600, 800) and p.max == (DEFAULT_MAX_BATCH, 3, 1600, 1344)
    [p] = resolve_profiles(DYNAMIC, (1, 3, 800, 1344), 32, AXES, max_shape="2x3x640x640")
    assert p.max == (2, 3, 640, 640) and p.opt == (1, 3, 640, 640) and p.min == (1, 3, 320, 320)
    [p] = resolve_profiles(DYNAMIC, (1, 3, 800, 1344), 32, AXES, min_shape="1x3x64x64", opt_shape="2x3x64x64",
                           max_shape="2x3x128x128")
    assert (p.min, p.opt, p.max) == ((1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 128, 128))


@pytest.mark.parametrize("kwargs,match", [
    (dict(opt_shape="1x3x100x128"), "height 100 is not a multiple of the model's size divisibility 32"),
    (dict(min_shape="1x4x64x64"), "channels is fixed at 3"),
    (dict(min_shape="1x3x64"), "has 4 dimensions, the shape has 3"),
    (dict(min_shape="1x3x640x640", max_shape="1x3x320x320"), "min <= opt <= max"),
    (dict(min_shape="0x3x64x64"), "batch must be at least 1"),
])
def test_invalid_profiles_are_one_line_errors(kwargs, match):
    with pytest.raises(DeformRTError, match=match) as info:
        resolve_profiles(DYNAMIC, (1, 3, 256, 320), 32, AXES, **kwargs)
    assert "\n" not in str(info.value)


def test_second_input_must_be_static_or_given():
    inputs = {"images": DYNAMIC["images"], "extra": ["n", 4]}
    with pytest.raises(DeformRTError, match="'extra' is dynamic"):
        resolve_profiles(inputs, (1, 3, 64, 64), 32)
    profiles = resolve_profiles(inputs, (1, 3, 64, 64), 32, min_shape="extra:1x4", opt_shape="extra:2x4",
                                max_shape="extra:3x4")
    assert profiles[1] == ShapeProfile("extra", (1, 4), (2, 4), (3, 4))


def test_membership_and_round_trip():
    p = ShapeProfile("images", (1, 3, 320, 320), (1, 3, 800, 1344), (4, 3, 1344, 1344))
    assert p.contains((2, 3, 640, 1344)) and not p.contains((1, 3, 1376, 320)) and not p.contains((1, 3, 320))
    check_in_profile(p, (1, 3, 320, 320))
    with pytest.raises(DeformRTError, match=r"1x3x2000x320 is outside .*max 4x3x1344x1344.*--max-shape"):
        check_in_profile(p, (1, 3, 2000, 320))
    assert ShapeProfile.from_dict(p.to_dict()) == p
    with pytest.raises(DeformRTError, match="malformed"):
        ShapeProfile.from_dict({"name": "images", "min": [1]})


def test_a_detectors_image_sizes_follows_the_image_batch():
    """A whole-detector file: `image_sizes` [batch, 2] shares the image's batch symbol, so its
    profile is the image profile's batch range, also after the user widens it."""
    inputs = {"images": DYNAMIC["images"], "image_sizes": ["batch", 2]}
    images, sizes = resolve_profiles(inputs, (1, 3, 128, 160), 32, AXES)
    assert sizes == ShapeProfile("image_sizes", (images.min[0], 2), (images.opt[0], 2), (images.max[0], 2))
    assert images.max[0] == DEFAULT_MAX_BATCH
    _, sizes = resolve_profiles(inputs, (1, 3, 128, 160), 32, AXES, max_shape="images:8x3x1344x1344",
                                opt_shape="images:2x3x800x1344")
    assert (sizes.min, sizes.opt, sizes.max) == ((1, 2), (2, 2), (8, 2))
    # Given explicitly, the user's shapes win.
    _, sizes = resolve_profiles(inputs, (1, 3, 128, 160), 32, AXES, max_shape="image_sizes:3x2")
    assert sizes.max == (3, 2)


def test_a_detectors_sides_go_up_to_its_max_size_test():
    from exporter.trt.profiles import detector_max_side

    inputs = {"images": DYNAMIC["images"], "image_sizes": ["batch", 2]}
    images, _ = resolve_profiles(inputs, (1, 3, 128, 160), 32, AXES, max_side=detector_max_side(1333))
    assert images.max[2:] == (1344, 1344)
    images, _ = resolve_profiles(inputs, (1, 3, 128, 160), 32, AXES, max_side=detector_max_side(200))
    assert images.min[2:] == (128, 160) and images.max[2:] == (224, 224)  # 200 rounded up to 32
