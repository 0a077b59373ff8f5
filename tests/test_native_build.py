"""Finding and building the native libraries: explicit path, environment, build directory; one-line
errors for every bad input; `deformrt build-plugin` stays a thin wrapper; the CUDA backend binding
imports and reports itself unavailable without its library."""

from __future__ import annotations

import re

import pytest
import torch
from typer.testing import CliRunner

from models import native
from exporter.trt import plugin_build
from exporter.cli import app
from models.errors import DeformRTError
from models.ops import cuda_kernels, select_backend

FINDERS = [
    (native.find_plugin_library, native.PLUGIN_ENV, native.PLUGIN_LIBRARY),
    (native.find_kernel_library, native.KERNEL_ENV, native.KERNEL_LIBRARY),
]


@pytest.fixture
def no_default_build(tmp_path, monkeypatch):
    build = tmp_path / "build"
    monkeypatch.setattr(native, "DEFAULT_BUILD_DIR", build)
    for _, env, _ in FINDERS:
        monkeypatch.delenv(env, raising=False)
    return build


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("find,env,name", FINDERS)
def test_lookup_order_explicit_then_env_then_build_dir(tmp_path, no_default_build, monkeypatch, find, env, name):
    no_default_build.mkdir()
    in_build = no_default_build / name
    in_build.write_bytes(b"")
    assert find() == in_build.resolve()

    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / name).write_bytes(b"")
    monkeypatch.setenv(env, str(env_dir / name))
    assert find() == (env_dir / name).resolve()

    explicit = tmp_path / "explicit"
    explicit.mkdir()
    (explicit / name).write_bytes(b"")
    assert find(explicit) == (explicit / name).resolve()  # a directory holding the library
    assert find(str(explicit / name)) == (explicit / name).resolve()


@pytest.mark.parametrize("find,env,name", FINDERS)
def test_missing_library_is_one_line_naming_where_and_how(tmp_path, no_default_build, monkeypatch, find, env, name):
    with pytest.raises(DeformRTError) as exc:
        find()
    message = _one_line(exc)
    assert str(no_default_build / name) in message and "deformrt build-plugin" in message

    monkeypatch.setenv(env, str(tmp_path / "nowhere.so"))
    with pytest.raises(DeformRTError) as exc:
        find()
    assert f"${env}" in _one_line(exc) and "nowhere.so" in str(exc.value)

    # An explicit path that does not exist is an error even when the build directory has the library.
    no_default_build.mkdir()
    (no_default_build / name).write_bytes(b"")
    with pytest.raises(DeformRTError, match="given path"):
        find(tmp_path / "missing")


@pytest.mark.parametrize("kwargs,message", [
    (dict(archs="sm_80"), "invalid CUDA architecture list"),
    (dict(archs="80;;compute_90"), "invalid CUDA architecture list"),
    (dict(archs=""), "invalid CUDA architecture list"),
    (dict(jobs=0), "--jobs must be >= 1"),
    (dict(tensorrt_root="/no/such/dir"), "is not a directory"),
])
def test_build_plugin_rejects_bad_arguments_before_running_anything(monkeypatch, kwargs, message):
    monkeypatch.setattr(plugin_build, "_run", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(DeformRTError, match=message) as exc:
        plugin_build.build_plugin(**kwargs)
    _one_line(exc)


def test_build_plugin_include_dir_must_hold_tensorrt_headers(tmp_path):
    with pytest.raises(DeformRTError, match="has no NvInferRuntime.h"):
        plugin_build.build_plugin(tensorrt_include_dir=tmp_path)


def test_build_plugin_without_cmake(monkeypatch, tmp_path):
    monkeypatch.setattr(plugin_build.shutil, "which", lambda name: None)
    with pytest.raises(DeformRTError, match="cmake not found"):
        plugin_build.build_plugin(build_dir=tmp_path)


def test_build_plugin_passes_options_to_cmake_and_reports_a_missing_plugin(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(plugin_build, "_run", lambda cmd, step: calls.append((step, cmd)))
    include = tmp_path / "trt"
    include.mkdir()
    (include / "NvInferRuntime.h").write_text("")
    with pytest.raises(DeformRTError, match="without libdeformrt_plugin.so"):
        plugin_build.build_plugin(build_dir=tmp_path / "b", tensorrt_include_dir=include, archs=[87, "90"], jobs=3)
    (configure_step, configure), (build_step, build) = calls
    assert (configure_step, build_step) == ("configure", "build")
    assert f"-DTENSORRT_INCLUDE_DIR={include.resolve()}" in configure
    assert "-DCMAKE_CUDA_ARCHITECTURES=87;90" in configure and "-DDEFORMRT_NVCC_THREADS=3" in configure
    assert build[-2:] == ["--parallel", "3"]
    assert not [a for a in configure if a.startswith("-U")]

    # Without --archs: the default architectures, even where an earlier --archs build cached its own.
    calls.clear()
    with pytest.raises(DeformRTError, match="without libdeformrt_plugin.so"):
        plugin_build.build_plugin(build_dir=tmp_path / "b", tensorrt_include_dir=include)
    configure = calls[0][1]
    assert "-UCMAKE_CUDA_ARCHITECTURES" in configure
    assert not [a for a in configure if a.startswith("-DCMAKE_CUDA_ARCHITECTURES")]

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / native.PLUGIN_LIBRARY).write_bytes(b"")
    assert plugin_build.build_plugin(build_dir=tmp_path / "b") == (tmp_path / "b" / native.PLUGIN_LIBRARY).resolve()


def test_failed_step_is_one_line_error(monkeypatch, tmp_path, capsys):
    with pytest.raises(DeformRTError, match=r"configure failed \(exit status 3\)") as exc:
        plugin_build._run(["sh", "-c", "echo progress-line; exit 3"], "configure")
    _one_line(exc)
    assert "progress-line" in capsys.readouterr().err


def test_cli_build_plugin_prints_the_library(monkeypatch, tmp_path):
    seen = {}

    def fake_build(**kwargs):
        seen.update(kwargs)
        return tmp_path / native.PLUGIN_LIBRARY

    monkeypatch.setattr(plugin_build, "build_plugin", fake_build)
    result = CliRunner().invoke(app, ["build-plugin", "--archs", "87", "-j", "2", "--build-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / native.PLUGIN_LIBRARY)
    assert seen["archs"] == "87" and seen["jobs"] == 2 and seen["build_dir"] == tmp_path


def test_cli_build_plugin_error_is_one_line_exit_1():
    result = CliRunner().invoke(app, ["build-plugin", "--archs", "sm_87"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid CUDA architecture list")


def test_cuda_backend_is_registered_but_unavailable_without_library(no_default_build, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda_kernels._library.cache_clear()
    try:
        assert cuda_kernels.is_available() is False
        assert select_backend(torch.device("cpu")) == "reference"
    finally:
        cuda_kernels._library.cache_clear()


def test_desc_mirrors_the_c_struct():
    text = (native.PLUGINS_DIR / "include" / "deformrt" / "deformConvDesc.h").read_text()
    body = text[text.index("typedef struct DeformrtConvDesc"):text.index("} DeformrtConvDesc;")]
    fields = [f for line in re.findall(r"int64_t ([^;]+);", body) for f in re.split(r",\s*", line)]
    assert tuple(fields) == cuda_kernels.DESC_FIELDS


def test_cuda_backend_returns_an_empty_batch_without_calling_the_kernels(monkeypatch):
    # The kernels accept only non-empty problems; an empty output is returned before they are asked.
    class NoCalls:
        def __getattr__(self, name):
            pytest.fail(f"{name} called for an empty problem")

    monkeypatch.setattr(cuda_kernels, "_library", lambda: NoCalls())
    x, offset, weight = torch.randn(0, 4, 5, 5), torch.randn(0, 18, 5, 5), torch.randn(6, 4, 3, 3)
    y = cuda_kernels.deform_conv2d_cuda(x, offset, weight, None, None, (1, 1), (1, 1), (1, 1))
    assert y.shape == (0, 6, 5, 5) and y.dtype == torch.float32
