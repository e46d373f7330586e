"""The `speech` console script: help and the runtime benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from speech.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "speech"  # installed beside the interpreter of the environment
    if not exe.exists():
        pytest.skip(f"the speech console script is not installed at {exe}")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, check=False)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ["bench", "transcribe", "say", "convert", "mic", "serve", "export", "train", "corpus"]:
        assert name in result.stdout


def test_bench_runtime_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "runtime.json"
    main(["bench", "runtime", "--streams", "4", "--chunks", "5", "--chunk-frames", "8", "--channels", "32",
          "--layers", "2", "--max-batch", "4", "--repeats", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert all(column in printed for column in ("scheduler overhead", "in-run", "end-to-end", "p99 ms"))
    data = json.loads(out.read_text())
    results = data["results"]
    assert data["benchmark"] == "runtime" and data["config"]["streams"] == 4
    assert results["batch_sizes"] and 1 <= results["mean_batch"] <= 4
    assert sum(int(k) * v for k, v in results["batch_sizes"].items()) == 4 * 5
    assert results["latency_ms"]["p50"] <= results["latency_ms"]["p99"]
    assert results["scheduler_overhead"] is not None and results["in_run_overhead"] is not None
    assert len(results["end_to_end_overheads"]) == 2


def test_bench_runtime_thread_executor_via_console_script(tmp_path):
    out = tmp_path / "thread.json"
    result = run_cli("bench", "runtime", "--streams", "3", "--chunks", "4", "--chunk-frames", "4", "--channels",
                     "16", "--layers", "1", "--repeats", "1", "--executor", "thread", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["results"]["scheduler_overhead"] is None  # only end-to-end in thread mode


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "speech.cli", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "COMMAND" in result.stdout


def test_bench_runtime_reads_a_yaml_config_and_flags_override_it(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text("streams: 2\nchunks: 3\nchunk_frames: 4\nchannels: 8\nlayers: 1\nrepeats: 1\n")
    out = tmp_path / "r.json"
    main(["bench", "runtime", "--config", str(config), "--streams", "3", "--json", str(out)])
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["streams"], cfg["chunks"], cfg["channels"]) == (3, 3, 8)
    config.write_text("streams: 2\nwidth: 9\n")
    assert main(["bench", "runtime", "--config", str(config)]) == 2
    assert "unknown keys ['width']" in capsys.readouterr().err


def test_shipped_bench_config_is_valid():
    import yaml

    from speech.bench.runtime import RuntimeBenchConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "bench_runtime.yaml"
    assert RuntimeBenchConfig(**yaml.safe_load(path.read_text())) == RuntimeBenchConfig()
