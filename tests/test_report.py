"""``serenity report``: one self-contained HTML page whose figures are those of ``analyze``, whose
images are inline PNGs, which names the tensors live at each peak (summing to the peak) and the
command that rebuilds it; it never overwrites the model, and it renders in headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from serenity import __version__, zoo
from serenity.cli import main
from serenity.formats import load
from serenity.formats.json_io import to_dict
from serenity.ir import Graph, Op, Tensor, with_alignment
from serenity.schedulers import DEFAULT_METHOD, schedule

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def zoo_cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "swiftnet_cell_a.onnx"
    onnx.save(zoo.build("swiftnet_cell_a"), path)
    return path


def _model(name: str, zoo_cell: Path) -> Path:
    return zoo_cell if name == "zoo" else EXAMPLES / name


def _images(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def _live_rows(page: str, label: str) -> list[tuple[tuple[str, ...], int]]:
    """(tensor names, bytes) of the table under 'Tensors live at the peak of the LABEL order'."""
    start = page.index(f"Tensors live at the peak of the {label} order")
    table = page[start : page.index("</table>", start)]
    rows = re.findall(r"<tr><td>(.*?)</td><td class=num>([0-9,]+) B", table)
    return [(tuple(html.unescape(n).split(" = ")), int(b.replace(",", ""))) for n, b in rows]


def _live_at(graph: Graph, order: tuple[int, ...], s: int) -> dict[str, int]:
    """Independently of the package: activations live while step ``s`` runs (a tensor lives from
    its producer's step, or 0, to its last reader's step, or the end for a graph output)."""
    step = {v: i for i, v in enumerate(order)}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for op in graph.ops:
        for n in op.outputs:
            first[n] = step[op.index]
            last.setdefault(n, step[op.index])
        for n in op.inputs:
            if n:
                last[n] = max(last.get(n, 0), step[op.index])
    live = {}
    for t in graph.activations:
        lo, hi = first.get(t.name, 0), len(order) - 1 if t.is_output else last.get(t.name, -1)
        if t.nbytes and lo <= s <= hi:
            live[t.name] = t.nbytes
    return live


@pytest.mark.parametrize(
    ("name", "memory_model"),
    [("nas_cells_int8.tflite", "tflm"), ("zoo", "tflm"), ("zoo", "inplace")],
)
def test_report_holds_the_figures_of_analyze(
    capsys, tmp_path: Path, zoo_cell: Path, name: str, memory_model: str
) -> None:
    model = _model(name, zoo_cell)
    out = tmp_path / "report.html"
    code, _, err = run(capsys, "report", model, "-o", out, "--memory-model", memory_model)
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    code, text, err = run(
        capsys, "analyze", model, "--order", DEFAULT_METHOD, "--json", "--memory-model", memory_model
    )
    assert code == 0, err
    a = json.loads(text)
    best = a["methods"][DEFAULT_METHOD]

    # 1. The numbers of analyze, exact to the byte.
    def row(label: str) -> str:
        m = re.search(rf"<tr><th>{re.escape(label)}</th><td>(.*?)</td></tr>", page)
        assert m, label
        return html.unescape(m.group(1))

    assert row("ops") == str(a["ops"]) and row("activation tensors") == str(a["activation_tensors"])
    assert row("peak (listed order)").startswith(f"{a['peak_bytes']:,} B")
    assert row("peak (listed order)").endswith(f"at op '{a['peak_op']}'")
    assert row("peak (optimal order)").startswith(f"{best['peak_bytes']:,} B")
    assert row("lower bound").startswith(f"{best['lower_bound']:,} B")
    assert row("op lower bound").startswith(f"{a['lower_bound']:,} B")
    assert row("proven optimal") == ("yes" if best["proven_optimal"] else "no")
    assert row("memory model") == a["memory_model"] == memory_model
    assert row("alignment") == f"{a['alignment']} B" and row("format") == a["format"]

    # 2. Two inline PNG images (timeline, arena) that decode.
    images = _images(page)
    assert len(images) == 2
    for png in images:
        assert png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.width > 300 and im.height > 200

    # 3. The tensors live at each peak add up to that peak.
    listed = _live_rows(page, "listed")
    optimal = _live_rows(page, "optimal")
    assert sum(b for _, b in listed) == a["peak_bytes"]
    assert sum(b for _, b in optimal) == best["peak_bytes"]
    acts = {t.name for t in load(model).graph.activations}
    assert all(n in acts for names, _ in listed + optimal for n in names)

    # 4. The command and the version.
    align = a["alignment"]
    command = (
        f"serenity report {model} -o {out} --memory-model {memory_model} --align {align} --planner exact"
    )
    assert f"<pre>{html.escape(command)}</pre>" in page
    assert f"Serenity {__version__}" in page


@pytest.mark.parametrize("name", ["nas_cells_int8.tflite", "zoo"])
def test_the_tensors_named_at_the_peak_are_the_ones_live_there(
    capsys, tmp_path: Path, zoo_cell: Path, name: str
) -> None:
    model = _model(name, zoo_cell)
    out = tmp_path / "r.html"
    assert run(capsys, "report", model, "-o", out)[0] == 0
    page = out.read_text(encoding="utf-8")
    m = load(model)
    graph = with_alignment(m.graph, 16 if m.format == "tflite" else 1)
    best = schedule(graph, DEFAULT_METHOD)
    for label, order in (("listed", graph.listed_order), ("optimal", best.order)):
        s = int(re.search(rf"peak of the {label} order: step (\d+)", page).group(1))  # type: ignore[union-attr]
        assert dict((names[0], b) for names, b in _live_rows(page, label)) == _live_at(graph, tuple(order), s)


def test_the_page_loads_nothing_from_outside(capsys, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert run(capsys, "report", EXAMPLES / "nas_cells_int8.tflite", "-o", out)[0] == 0
    page = out.read_text(encoding="utf-8")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"(?:https?|ftp|file|wss?):|=\s*[\"']?//", text, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    assert "href=" not in page and "url(" not in page


def test_the_command_on_the_page_rebuilds_it(capsys, tmp_path: Path, zoo_cell: Path) -> None:
    out = tmp_path / "r.html"
    code, text, err = run(
        capsys, "report", zoo_cell, "-o", out, "--planner", "tflm-greedy", "--time-limit", "30", "--json"
    )
    assert code == 0, err
    first = json.loads(text)
    page = out.read_text(encoding="utf-8")
    command = html.unescape(re.search(r"<pre>(.*?)</pre>", page).group(1))  # type: ignore[union-attr]
    argv = shlex.split(command)
    assert argv[:2] == ["serenity", "report"] and "--time-limit" in argv and "tflm-greedy" in argv
    code, text, err = run(capsys, *argv[1:], "--json")
    assert code == 0, err
    again = json.loads(text)
    for d in (first, again):
        d.pop("seconds")
    assert again == first and first["arena_bytes"] >= first["optimal_peak_bytes"]


def test_model_derived_strings_are_escaped_and_an_invalid_listed_order_is_said(
    capsys, tmp_path: Path
) -> None:
    evil = '<script>alert("x")</script>&amp;'
    g = Graph(
        "j",
        # Listed out of order: C reads a and b before A and B wrote them.
        [Op("C", "Add", ("a", evil), ("c",)), Op("A", "R", ("x",), ("a",)), Op(evil, "R", ("x",), (evil,))],
        [
            Tensor("x", (10,), "int8", 10),
            Tensor("a", (20,), "int8", 20),
            Tensor(evil, (30,), "int8", 30),
            Tensor("c", (5,), "int8", 5),
        ],
        ["x"],
        ["c"],
    )
    src = tmp_path / "g.json"
    src.write_text(json.dumps(to_dict(g)))
    out = tmp_path / "r.html"
    code, _, err = run(capsys, "report", src, "-o", out)
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and html.escape(evil) in page
    assert "invalid order" in page and "not topological" in page
    assert len(_images(page)) == 2
    assert sum(b for _, b in _live_rows(page, "optimal")) == 60


def test_output_equal_to_the_model_is_refused(capsys, tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(EXAMPLES / "nas_cells_int8.tflite", model)
    before = model.read_bytes()
    code, out, err = run(capsys, "report", model, "-o", model)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "would overwrite the input" in err and model.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--planner", "nope"], "unknown planner"),
        (["-o", "/nonexistent-dir/r.html"], "does not exist"),
        (["--align", "0"], "--align"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path: Path, argv: list[str], message: str) -> None:
    opts = argv if "-o" in argv else ["-o", str(tmp_path / "r.html"), *argv]
    code, _, err = run(capsys, "report", EXAMPLES / "nas_cells_int8.tflite", *opts)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_a_missing_model_is_one_line_and_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "report", tmp_path / "none.onnx", "-o", tmp_path / "r.html")
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)
def test_the_page_renders_in_headless_chromium(capsys, tmp_path: Path, zoo_cell: Path) -> None:
    out = tmp_path / "report.html"
    assert run(capsys, "report", zoo_cell, "-o", out)[0] == 0
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        out.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[:2] == (1600, 1200)
    non_white: np.ndarray = np.asarray((rgb < 240).any(axis=2))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    # Text, tables and the plots: a blank page is one colour, a page of text alone is greys.
    assert non_white.mean() > 0.02 and len(colours) > 100
    saturated = (rgb.max(axis=2).astype(int) - rgb.min(axis=2)) > 80  # the coloured plot lines
    assert saturated.sum() > 1000
    # The two plots are where they should be: the bottom half of the window is not blank either.
    assert non_white[800:].mean() > 0.02
