"""The ``mismatch`` command as a newcomer meets it: --version, help with an example for every
verb and a help string for every flag (both without importing torch or Ray), the report's
output path, a storage folder named instead of a study, and plain spec error messages."""

import argparse
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from mismatch.cli import main, make_parser
from mismatch.config import SpecError, load_trial_spec
from mismatch.study.trials import load_study

PROBE = """
import json, sys
from mismatch.cli import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "ray") if m in sys.modules)}))
"""


def _probe(*argv: str) -> tuple[dict, str]:
    """Run the CLI in a fresh interpreter: its exit code, heavy modules imported, and stdout."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    *printed, last = proc.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(printed)


def test_version_prints_the_installed_version_without_torch_or_ray():
    result, printed = _probe("--version")
    assert result == {"code": 0, "heavy": []}
    assert printed == f"mismatch {version('mismatch')}"


@pytest.mark.parametrize("argv", [["--help"], ["study", "run", "--help"], ["train", "--help"]])
def test_help_is_torch_free(argv):
    result, printed = _probe(*argv)
    assert result == {"code": 0, "heavy": []}
    assert "examples:" in printed


def _walk(parser: argparse.ArgumentParser, path: str = "mismatch"):
    """Every (command path, parser) pair under ``parser``, itself included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{path} {name}")


def test_every_verb_has_an_example_and_every_flag_a_help():
    parsers = dict(_walk(make_parser()))
    assert {"mismatch study run", "mismatch data synth", "mismatch report", "mismatch erf"} <= set(parsers)
    for path, parser in parsers.items():
        assert parser.epilog and "examples:" in parser.epilog, path
        assert f"  {path}" in parser.epilog, f"{path}: no example of itself"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{path} {choice.dest}"
            else:
                assert action.help and action.help.strip(), f"{path}: {action.option_strings or action.dest}"


def test_top_level_description_says_what_the_tool_does():
    text = make_parser().format_help()
    assert "parses arguments and calls the library" not in text
    for words in ("semi-supervised medical image segmentation", "Ray Tune", "HTML report"):
        assert words.lower() in text.lower(), words


def test_report_prints_the_absolute_path_of_the_index(tmp_path, monkeypatch, capsys):
    import mismatch.report

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mismatch.report, "build_report", lambda *a, **k: Path("reports/s/index.html"))
    assert main(["report", "runs/s"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"wrote {tmp_path.resolve() / 'reports' / 's' / 'index.html'}"


def test_report_on_a_storage_folder_lists_its_studies(tmp_path, capsys):
    for study, table in (("alpha", "images"), ("beta", "trials")):
        (tmp_path / study / table).mkdir(parents=True)
        (tmp_path / study / table / "t1.parquet").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder of studies, not a study" in err
    assert f"  {tmp_path}/alpha\n  {tmp_path}/beta\n" in err
    assert "empty" not in err
    assert f"mismatch report {tmp_path}/alpha" in err


def test_report_on_an_empty_folder_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no images/ folder and no Parquet files" in capsys.readouterr().err


TRIAL = {"data": {"synthetic": {"kind": "vessels"}}, "method": {"name": "mismach"}}
STUDY = {
    "name": "typo",
    "base": {"data": {"synthetic": {"kind": "vessels", "cases": 6, "size": [32, 32], "slices": 10}},
             "train": {"epochs": 1}, "protocol": {"unlabelled_cases": 2, "validation_cases": 1, "test_cases": 2}},
    "methods": [{"name": "mismach"}],
    "grid": {"labelled_slices": [2], "fold": [0]},
}
PLAIN = "method: unknown method 'mismach' (did you mean 'mismatch'?); known: "


def test_unknown_method_in_a_trial_spec_reads_plainly():
    with pytest.raises(SpecError) as info:
        load_trial_spec(TRIAL)
    message = str(info.value)
    assert PLAIN in message
    assert '"' not in message and "Value error" not in message


def test_unknown_method_in_a_study_file_reads_plainly(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    with pytest.raises(SpecError) as info:
        load_study(path, storage=str(tmp_path / "store"))
    message = str(info.value)
    # the study file's own key path, checked before any trial is expanded
    assert str(path) in message and "methods[0].name: unknown method 'mismach' (did you mean 'mismatch'?)" in message
    assert '"' not in message and "Value error" not in message


def test_a_key_error_from_a_validator_loses_its_repr_quotes(monkeypatch):
    import mismatch.config as config

    def lookup(data):
        raise KeyError("unknown thing 'x'")

    monkeypatch.setattr(config.TrialSpec, "model_validate", lookup)
    with pytest.raises(SpecError) as info:
        load_trial_spec({})
    assert str(info.value) == "invalid spec: unknown thing 'x'"


def test_erf_shows_progress_and_units(capsys):
    argv = ["erf", "--branches", "main", "pasb", "--depths", "0", "--channels", "2", "--size", "9",
            "--inits", "1", "--inputs", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    progress = captured.err.strip().split("\n")
    assert [line.split(":")[0] for line in progress] == ["[1/2] main at depth 0", "[2/2] pasb at depth 0"]
    table, units = captured.out.strip().rsplit("\n", 1)
    assert len(table.split("\n")) == 2 + 2  # header, rule, one row per probe
    assert "in pixels" in units and "edge_mass" in units


def test_erf_on_3d_blocks(capsys):
    argv = ["erf", "--dims", "3", "--branches", "nasb", "--depths", "0", "--channels", "2", "--size", "7",
            "--inits", "1", "--inputs", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("[1/1] nasb at depth 0")
    table, units = captured.out.strip().rsplit("\n", 1)
    assert len(table.split("\n")) == 3 and "nasb" in table
    assert "in voxels" in units and "sphere" in units


def test_models_lists_dims_default_width_and_counts(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.strip().split("\n")}
    assert lines["mm"] == ["2D", "w=24", "2,681,132"]
    assert lines["mm3d"] == ["3D", "w=16", "14,215,178"] and lines["unet3d"] == ["3D", "w=16", "10,026,849"]
    assert main(["models", "--width", "8"]) == 0
    assert all("w=8" in line for line in capsys.readouterr().out.strip().split("\n"))


EXIT = """
import atexit, sys, threading, time
from mismatch import cli
atexit.register(lambda: print("exit handler ran", flush=True))
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
sys.argv = ["mismatch", "study", "status", sys.argv[2], "--storage", sys.argv[3]]
cli.run()
"""


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_the_console_script_keeps_its_exit_code_output_and_handlers(tmp_path, case):
    """`run` leaves with os._exit (no module teardown) only after the exit handlers ran and the
    output was flushed; a non-daemon thread still running makes it exit the normal way."""
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nbase: {data: {synthetic: {kind: vessels}}}\nmethods: [{name: sup1}]\n"
                     "grid: {labelled_slices: [2, 4]}\n")
    proc = subprocess.run([sys.executable, "-c", EXIT, case, str(study), str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("s: ")] == ["s: 2 trials: 0 done, 0 running, 0 failed, 2 pending; ETA ?"]
    assert ("thread finished" in lines) == (case == "thread") and lines[-1] == "exit handler ran"
    bad = subprocess.run([sys.executable, "-m", "mismatch", "study", "status", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "missing.yaml" in bad.stderr
