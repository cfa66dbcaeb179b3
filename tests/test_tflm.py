"""The TFLite Micro runner: specs, inputs, error classes, arena growth, and alignment kept by
reordering a 16-byte-aligned file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

from serenity.errors import ModelFormatError, UnsupportedError
from serenity.formats import load, save
from serenity.runtime import tflm
from test_tflite import TFLM_HEAD, model_path, reordered


def test_input_and_output_specs() -> None:
    (spec,) = tflm.input_specs(model_path("inception_block_int8"))
    assert (spec.name, spec.shape, spec.dtype) == (
        "serving_default_keras_tensor_89:0",
        (1, 28, 28, 32),
        "int8",
    )
    assert len(spec.scales) == len(spec.zero_points) == 1 and spec.zero_points == (-128,)
    (out,) = tflm.output_specs(model_path("inception_block_int8"))
    assert (out.shape, out.dtype) == ((1, 28, 28, 56), "int8")
    (fspec,) = tflm.input_specs(model_path("inception_block_float").read_bytes())
    assert (fspec.dtype, fspec.scales) == ("float32", ())


def test_random_inputs_are_seeded() -> None:
    p = model_path("fan_concat_int8")
    a, b, c = tflm.random_inputs(p, 1), tflm.random_inputs(p, 1), tflm.random_inputs(p, 2)
    assert a[0].dtype == np.int8 and a[0].shape == (1, 32, 32, 8)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_bytes_and_paths_run_alike() -> None:
    p = model_path("fan_concat_float")
    x = tflm.random_inputs(p, 0)
    (y1,) = tflm.run(p, x)
    (y2,) = tflm.run(p.read_bytes(), x)
    assert y1.dtype == np.float32 and y1.tobytes() == y2.tobytes() and np.any(y1 != 0)


def test_wrong_inputs_are_refused_before_tflm() -> None:
    p = model_path("fan_concat_int8")
    (x,) = tflm.random_inputs(p, 0)
    with pytest.raises(tflm.TFLMError, match=r"has 1 inputs, 2 were given"):
        tflm.run(p, [x, x])
    with pytest.raises(tflm.TFLMError, match=r"wants int8\[1, 32, 32, 8\], got float32\[1, 32, 32, 8\]"):
        tflm.run(p, [x.astype(np.float32)])
    with pytest.raises(tflm.TFLMError, match=r"got int8\[1, 32, 32, 4\]"):
        tflm.run(p, [x[..., :4]])


def test_unsupported_operator(tmp_path: Path) -> None:
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAs(model_path("fan_concat_int8").read_bytes(), 0))
    for code in m.operatorCodes:
        if code.builtinCode == fb.BuiltinOperator.CONCATENATION:
            code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.HASHTABLE_LOOKUP
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    p = tmp_path / "unsupported.tflite"
    p.write_bytes(bytes(b.Output()))
    assert load(p).graph.ops[8].type == "HASHTABLE_LOOKUP"
    with pytest.raises(
        UnsupportedError, match=r"unsupported.tflite: TFLite Micro: .*'HASHTABLE_LOOKUP'"
    ) as e:
        tflm.arena_bytes(p)
    assert "\n" not in str(e.value)


def test_corrupt_model_is_a_format_error(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.tflite"
    p.write_bytes(model_path("fan_concat_int8").read_bytes()[:3000])
    with pytest.raises(ModelFormatError, match=r"corrupt\.tflite: corrupt or truncated"):
        tflm.run(p, [])


def test_arena_grows_until_allocation_succeeds() -> None:
    usage = tflm.execute(model_path("nas_cells_int8"), None, arena_size=4096).arena
    assert usage.arena_size > 4096 and usage.head == TFLM_HEAD["nas_cells_int8"]
    assert usage.total >= usage.head + usage.tail and "Arena allocation head" in usage.report


def buffer_alignments(data: bytes) -> set[int]:
    m = fb.Model.GetRootAs(data, 0)
    out = set()
    for k in range(m.BuffersLength()):
        buf = m.Buffers(k)
        if buf.DataLength():
            out.add(buf._tab.Vector(buf._tab.Offset(4)) % 16)
    return out


def test_reordering_keeps_16_byte_alignment(tmp_path: Path) -> None:
    # The shared models are packed at 4-byte alignment; TFLM's own align tool makes them 16.
    aligned = tmp_path / "aligned.tflite"
    tool = "tflite_micro.tensorflow.lite.micro.tools.tflite_flatbuffer_align"
    subprocess.run([sys.executable, "-m", tool, str(model_path("nas_cells_int8")), str(aligned)], check=True)
    assert buffer_alignments(aligned.read_bytes()) == {0}
    m = load(aligned)
    out = tmp_path / "reordered.tflite"
    save(m, reordered(m, seed=5), out)
    assert buffer_alignments(out.read_bytes()) == {0}
    x = tflm.random_inputs(aligned, 0)
    assert [y.tobytes() for y in tflm.run(out, x)] == [y.tobytes() for y in tflm.run(aligned, x)]
