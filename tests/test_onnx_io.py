"""ONNX import/export: round trips, reordered models in onnxruntime, external data."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnx_graphs as G
from dags import random_topological_order
from serenity.errors import CycleError, ExternalDataError, ModelFormatError
from serenity.formats import load, save
from serenity.formats.onnx_io import from_proto
from serenity.memory import simulate
from serenity.runtime import onnxrt
from serenity.verify import verify

BUILDERS = {"branchy": G.branchy, "wide": G.wide}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_round_trip_keeps_everything_but_order(tmp_path: Path, name: str) -> None:
    src = tmp_path / f"{name}.onnx"
    onnx.save(BUILDERS[name](), src)
    m = load(src)
    for seed in range(3):
        order = random_topological_order(m.graph, random.Random(seed))
        out = tmp_path / f"{name}_{seed}.onnx"
        save(m, order, out)
        m2 = load(out)
        assert [m2.graph.ops[i].name for i in range(len(order))] == [m.graph.ops[i].name for i in order]
        assert m2.graph.tensors == {
            n: t.__class__(
                **{
                    **{f: getattr(t, f) for f in t.__slots__},
                    "producer": m2.graph.tensors[n].producer,
                    "consumers": m2.graph.tensors[n].consumers,
                }
            )
            for n, t in m.graph.tensors.items()
        }
        assert m2.info["ir_version"] == m.info["ir_version"] and m2.info["opsets"] == m.info["opsets"]
        assert simulate(m2.graph, m2.graph.listed_order).peak == simulate(m.graph, order).peak
        rep = verify(src, out)
        assert rep.ok and rep.outputs_identical and rep.runtime == "onnxruntime", rep.problems


def test_reordered_outputs_identical_in_onnxruntime(tmp_path: Path) -> None:
    src = tmp_path / "b.onnx"
    onnx.save(G.branchy(seed=3), src)
    m = load(src)
    order = list(reversed(random_topological_order(m.graph, random.Random(1))))
    order = random_topological_order(m.graph, random.Random(7))
    out = tmp_path / "b2.onnx"
    save(m, order, out)
    feeds = onnxrt.random_inputs(onnxrt.session(src), seed=5)
    a, b = onnxrt.run(src, feeds), onnxrt.run(out, feeds)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_verify_detects_a_changed_weight(tmp_path: Path) -> None:
    src, bad = tmp_path / "a.onnx", tmp_path / "bad.onnx"
    p = G.branchy()
    onnx.save(p, src)
    p.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(numpy_helper.to_array(p.graph.initializer[0]) * 2, "w")
    )
    onnx.save(p, bad)
    rep = verify(src, bad)
    assert not rep.ok and not rep.structure_equal


def test_external_data_loads_without_weights_and_is_copied_on_export(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    proto = G.branchy()
    onnx.save(
        proto,
        model_dir / "b.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="b.weights",
        size_threshold=0,
    )
    m = load(model_dir / "b.onnx")
    assert m.info["external_data"] == ["b.weights"]
    assert all(not t.raw_data for t in m.source.graph.initializer)  # weights never loaded
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    order = random_topological_order(m.graph, random.Random(2))
    save(m, order, out_dir / "b.onnx")
    assert (out_dir / "b.weights").read_bytes() == (model_dir / "b.weights").read_bytes()
    assert verify(model_dir / "b.onnx", out_dir / "b.onnx").ok


@pytest.mark.parametrize("location", ["../evil.bin", "/etc/passwd", "sub/../../evil.bin"])
def test_external_data_path_tricks_are_refused(tmp_path: Path, location: str) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (tmp_path / "evil.bin").write_bytes(b"\0" * 4096)
    proto = G.point_weights_at(G.branchy(), location)
    (model_dir / "b.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match=r"(refused|missing)"):
        load(model_dir / "b.onnx")


def test_external_data_symlink_escape_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    (model_dir / "w.bin").symlink_to(tmp_path / "secret.bin")
    proto = G.point_weights_at(G.branchy(), "w.bin")
    (model_dir / "b.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match="outside the model's folder"):
        load(model_dir / "b.onnx")


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    data = G.branchy().SerializeToString()
    (tmp_path / "t.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "c.onnx").write_bytes(b"\x08\x07garbage" + bytes(range(256)))
    (tmp_path / "e.onnx").write_bytes(b"")
    for name in ("t", "c", "e"):
        with pytest.raises(ModelFormatError, match=f"{name}.onnx"):
            load(tmp_path / f"{name}.onnx")


def test_cycle_in_onnx_names_the_path() -> None:
    p = G.branchy()
    # Make 'conv' read 'y' (the concat output): conv -> relu -> concat -> conv.
    p.graph.node[0].input[0] = "y"
    with pytest.raises(CycleError, match=r"graph has a cycle: conv -> \w+ -> concat -> conv"):
        from_proto(p)


def test_outer_scope_references_of_subgraphs_are_dependencies() -> None:
    from onnx import TensorProto, helper

    then_g = helper.make_graph(
        [helper.make_node("Identity", ["r"], ["t_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    g = helper.make_graph(
        nodes,
        "sub",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    graph = from_proto(m).graph
    assert graph.predecessors(1) == (0,)  # 'if' depends on 'relu' through its branches
    assert not graph.is_topological([1, 0])
