"""ONNX export of every streaming step, end to end through the CLI: `speech export`, `speech export check`,
`speech transcribe --backend onnx`, the static check and what a mismatched or missing piece says.

Parity (DESIGN.md 3): each backend chains its own state over a long stream; every step call's outputs and
next state are compared, and the text must be identical. With ../shared/data: 64 s of real speech (jfk,
an4/test, jfk), at least 50 chunks at every lookahead; without it, a synthetic signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import soundfile as sf
import torch

from exports.static_check import check_file
from speech.bench.nemo_reference import random_speechlike
from speech.cli import main
from speech.exporting import directory_locator, export_model, fastconformer_exportable
from streaming.onnx_backend import OnnxBackend, StepMismatch
from streaming.reference import ReferenceStep

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AN4 = DATA / "an4" / "audio" / "test"
JFK = DATA / "jfk" / "audio" / "jfk.flac"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEECH_CACHE", str(tmp_path_factory.mktemp("speech-cache")))
        yield


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory) -> list[str]:
    """Real speech when ../shared/data is here (jfk, 14 an4/test utterances, jfk: 64 s), else 60 s synthetic."""
    if JFK.is_file() and AN4.is_dir():
        return [str(JFK), *map(str, sorted(AN4.glob("*/*.flac"))[:14]), str(JFK)]
    path = tmp_path_factory.mktemp("audio") / "speechlike.wav"
    sf.write(path, random_speechlike(60.0, seed=5), 16000)
    return [str(path)]


@pytest.fixture(scope="module")
def fastconformer_onnx(tmp_path_factory, cache) -> Path:
    out = tmp_path_factory.mktemp("fc-onnx")
    assert main(["export", "fastconformer", "-o", str(out)]) == 0
    return out


def _checked(directory: Path, audio: list[str], tmp_path: Path) -> dict:
    report = tmp_path / "check.json"
    code = main(["export", "check", str(directory), "--audio", *audio, "--json", str(report)])
    runs = json.loads(report.read_text())["results"]["runs"]
    return {"code": code, "runs": runs}


def test_fastconformer_files_and_manifest(fastconformer_onnx):
    manifest = json.loads((fastconformer_onnx / "manifest.json").read_text())
    steps = {e["step"] for e in manifest["steps"]}
    assert steps == {"fastconformer_encoder_13", "fastconformer_encoder_6", "fastconformer_encoder_1",
                     "fastconformer_encoder_0", "fastconformer_ctc", "fastconformer_prediction", "fastconformer_joint"}
    assert (fastconformer_onnx / "tokenizer.model").is_file()
    for entry in manifest["steps"]:
        path = fastconformer_onnx / entry["file"]
        report = check_file(path)
        assert report.ok and report.tensorrt_ready, (path, report.problems, report.non_tensorrt_ops)
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        facts = json.loads(meta["speech.facts"])
        assert meta["speech.model"] == "fastconformer" and facts["sample_rate"] == 16000
        assert facts["features"]["n_mels"] == 80 and meta["speech.tokenizer_file"] == "tokenizer.model"
        graph = onnx.load(str(path), load_external_data=False).graph
        for state in entry["signature"]["states"]:  # static per-stream shapes, batch axis free
            value = next(i for i in graph.input if i.name == f"state.{state['name']}")
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == state["shape"]


def test_fastconformer_chained_parity_every_lookahead(fastconformer_onnx, long_audio, tmp_path):
    checked = _checked(fastconformer_onnx, long_audio, tmp_path)
    assert checked["code"] == 0
    runs = checked["runs"]
    assert len(runs) == 8  # 4 lookaheads x (rnnt, ctc)
    for run in runs:
        assert run["torch_text"] == run["onnx_text"] and run["passed"], run["label"]
        assert run["worst"] <= 1e-4 and run["rounding"] is None, run["label"]
        encoder_calls = sum(n for step, n in run["calls"].items() if "encoder" in step)
        assert encoder_calls >= 50, run
        assert any(k.endswith("next.keys") for k in run["max_abs"]) and any("prediction" in k or "ctc" in k
                                                                            for k in run["max_abs"])


def test_transcribe_onnx_backend_same_text(fastconformer_onnx, long_audio, capsys):
    files = long_audio if JFK.is_file() else long_audio * 3
    texts = {}
    for backend in (["--backend", "torch"], ["--backend", "onnx", "--onnx", str(fastconformer_onnx)],
                    ["--backend", "onnx"]):  # the last exports into the cache on first use
        assert main(["transcribe", *files, "--format", "text", "--lookahead", "80ms", *backend]) == 0
        texts[" ".join(backend)] = capsys.readouterr().out
    assert len(set(texts.values())) == 1, texts
    assert texts["--backend torch"].count("\n") == len(files)


@pytest.mark.skipif(not AN4.is_dir(), reason=f"needs ../shared/data (an4/test) at {AN4}")
def test_transcribe_onnx_backend_an4_test(fastconformer_onnx, tmp_path):
    manifest = DATA / "an4" / "test.tsv"
    outputs = []
    for backend in (["--backend", "torch"], ["--backend", "onnx", "--onnx", str(fastconformer_onnx)]):
        out = tmp_path / f"{backend[1]}.tsv"
        assert main(["transcribe", "--manifest", str(manifest), "--out", str(out), *backend]) == 0
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") == 130


def test_stale_files_are_refused(fastconformer_onnx):
    from speech.asr_models import load_fastconformer

    model = load_fastconformer(None)
    with torch.no_grad():
        model.transducer.joint_out.bias.add_(0.5)  # other weights than the exported ones
    locate, precision = directory_locator(fastconformer_onnx)
    backend = OnnxBackend(locate, precision=precision)
    with pytest.raises(StepMismatch, match="re-export"):
        backend.prepare(fastconformer_exportable(model).steps[-1])
    with pytest.raises(StepMismatch, match="has no step"):
        backend.prepare(ReferenceStep(channels=8))


def test_int8_and_fp16_files_run_and_report(fastconformer_onnx, tmp_path, long_audio, cache):
    from speech.asr_models import load_fastconformer

    model = fastconformer_exportable(load_fastconformer(None))
    model.steps = [s for s in model.steps if s.name in ("fastconformer_encoder_1", "fastconformer_prediction",
                                                        "fastconformer_joint", "fastconformer_ctc")]
    sizes = {}
    for precision in ("int8", "fp16"):
        export_model(model, tmp_path / precision, precision, log=lambda *_: None)
        manifest = json.loads((tmp_path / precision / "manifest.json").read_text())
        assert manifest["precision"] == precision
        sizes[precision] = (tmp_path / precision / "fastconformer_encoder_1.onnx").stat().st_size
        assert all(e["checks"]["ok"] for e in manifest["steps"])
        if precision == "int8":  # every weight MatMul of the encoder (82) quantised
            counts = {e["step"]: e["weight_matmuls"] for e in manifest["steps"]}
            assert counts["fastconformer_encoder_1"] == {"int8": 82, "float": 0}, counts
    fp32 = (fastconformer_onnx / "fastconformer_encoder_1.onnx").stat().st_size
    assert sizes["int8"] < 0.45 * fp32 and 0.45 * fp32 < sizes["fp16"] < 0.55 * fp32
    for precision in ("int8", "fp16"):  # the backend runs them; text checked against WER in `speech bench`
        assert main(["transcribe", long_audio[0], "--format", "text", "--lookahead", "80ms", "--backend", "onnx",
                     "--onnx", str(tmp_path / precision)]) == 0


def test_static_check_finds_dynamic_states_and_foreign_files(tmp_path):
    from onnx import TensorProto, helper

    state = helper.make_tensor_value_info("state.keys", TensorProto.FLOAT, ["batch", "frames", 4])
    out = helper.make_tensor_value_info("next.keys", TensorProto.FLOAT, ["batch", "frames", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["state.keys"], ["next.keys"])], "g", [state], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "plain.onnx"
    onnx.save(model, path)
    assert "no step signature" in check_file(path).problems[0]
    signature = {"inputs": [], "outputs": [], "states": [{"name": "keys", "shape": [70, 4], "dtype": "float32",
                                                          "init": 0.0}], "geometry": {}, "extra": {}}
    model.metadata_props.add(key="speech.signature", value=json.dumps(signature))
    onnx.save(model, path)
    problems = check_file(path).problems
    assert any("state.keys" in p and "expected [batch, 70, 4]" in p for p in problems), problems


def test_tensorrt_without_tensorrt_says_so(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    assert main(["export", "fastconformer", "--format", "tensorrt", "-o", str(tmp_path / "trt")]) == 2
    err = capsys.readouterr().err
    assert "tensorrt" in err and "onnxruntime's TensorRT execution provider" in err
    assert not (tmp_path / "trt").exists()  # nothing half-written


def test_export_usage_errors(capsys):
    assert main(["export", "fastconformer"]) == 2
    assert "-o DIR" in capsys.readouterr().err
    assert main(["export", "check"]) == 2
    assert "usage: speech export check DIR" in capsys.readouterr().err
    assert main(["export", "no-such-model", "-o", "/tmp/x"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert main(["transcribe", str(JFK), "--backend", "onnx", "--int8"]) == 2
    assert "--precision int8" in capsys.readouterr().err
