"""Fail safe, round two: a workdir is only ever a run folder, and ``train.generate``'s
arguments are refused with one paragraph and exit 2 before anything is loaded or written.

All in this process: the commands' ``main`` (the same code path as the command line, without
a JAX start-up per case) and the check functions. A real run folder is conftest's shared
tiny run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train import generate as generate_cli
from train import main as train_cli
from train.runs.workdir import WorkdirError, _check_contents, check_workdir
from xlstm_jax.generation import MAX_NEW_TOKENS, check_sampling_args

pytestmark = pytest.mark.one_jax

HF_CONFIG = json.dumps({"model_type": "xlstm", "embedding_dim": 4096, "vocab_size": 50304})


def _folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# What each foreign folder holds, and what the refusal must name.
NOT_RUNS = {
    "hugging_face_checkpoint": (
        {"config.json": HF_CONFIG, "model.safetensors": "x", "tokenizer.json": "{}"},
        ['config.json (without the "model" section', "model.safetensors", "--init-from"],
    ),
    "reference_checkpoint": (
        {"config.yaml": "model: {}", "model_00001.safetensors": "x"},
        ["config.yaml", "model_00001.safetensors", "--init-from"],
    ),
    "tirex_checkpoint": ({"model.ckpt": "x"}, ["model.ckpt", "--init-from"]),
    "data_set": (
        {"train.jsonl": "{}", "val.txt": "x", "more/a.txt": "x"},
        ["not a run folder of train.main", "more, train.jsonl, val.txt"],
    ),
    "user_files": (
        {f"note{i}.md": "x" for i in range(7)},
        ["note0.md", "and 2 more", "empty or new folder"],
    ),
    "json_that_is_not_a_run_config": ({"config.json": "[1, 2]"}, ["config.json (without"]),
}


@pytest.mark.parametrize("case", sorted(NOT_RUNS))
def test_a_folder_that_is_not_a_run_is_refused_naming_what_it_holds(tmp_path, case):
    files, expected = NOT_RUNS[case]
    folder = _folder(tmp_path / case, files)
    before = _snapshot(folder)
    with pytest.raises(WorkdirError) as caught:
        check_workdir(folder)
    message = str(caught.value)
    for part in [f"--workdir {folder}", "Nothing was written", "runs/NAME", *expected]:
        assert part in message, message
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(
        {Path(n).parts[0] for n in files}
    )


RUN_FOLDERS = {
    "everything_a_run_writes": {
        "config.json": json.dumps({"name": "x", "model": {}}),
        "checkpoints/20/meta/x": "x",
        "metrics.jsonl": "",
        "events.out.tfevents.123.host": "",
        "loss_curve.png": "",
        ".lock": "",
        "set_aside/30/x": "",
        ".config.json.123-abcd.tmp": "",
    },
    # A run killed while writing config.json (test_fail_safe's half-written config resumes).
    "half_written_config": {"config.json": '{"model": {"embe', "checkpoints/10/x": ""},
    "killed_before_its_config": {".lock": "", "checkpoints/x": ""},
    "run_with_a_user_note": {"config.json": json.dumps({"model": {}}), "notes.txt": "mine"},
}


@pytest.mark.parametrize("case", sorted(RUN_FOLDERS))
def test_run_folders_and_empty_or_new_folders_are_accepted(tmp_path, case):
    check_workdir(_folder(tmp_path / case, RUN_FOLDERS[case]))
    (tmp_path / "empty").mkdir()
    check_workdir(tmp_path / "empty")
    check_workdir(tmp_path / "new" / "sub")


def test_a_real_run_folder_holds_only_what_runs_write(tiny_run):
    _check_contents(tiny_run[0])  # reads only: the shared run is not changed


def test_training_into_a_pretrained_folder_is_refused_and_its_config_kept(tmp_path, capsys):
    folder = _folder(tmp_path / "xLSTM-7b", {"config.json": HF_CONFIG, "model.safetensors": "x"})
    before = _snapshot(folder)
    assert train_cli.main(["--config", "xlstm_tiny", "--workdir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --workdir ") and "is a checkpoint folder" in err, err
    assert len(err.strip().splitlines()) == 1 and _snapshot(folder) == before


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"config.json": HF_CONFIG, "model.safetensors": "x"}, "--pretrained"),
        ({"config.yaml": "model: {}", "a.safetensors": "x"}, "--pretrained"),
        ({"model.ckpt": "x"}, "train.forecast --model"),
        ({"config.json": "{}"}, 'no "model" section'),
        ({"data.txt": "x"}, "not a training run (no config.json)"),
    ],
)
def test_sampling_with_a_folder_that_is_not_a_run_says_what_it_is(
    tmp_path, capsys, files, expected
):
    folder = _folder(tmp_path / "folder", files)
    assert generate_cli.main(["--workdir", str(folder), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("caf\udcc3 x", "byte 0xc3 (U+DCC3) at character 3"), ("\ud800", "a lone surrogate")],
)
def test_a_prompt_that_is_not_utf8_is_refused(tmp_path, capsys, prompt, expected):
    assert generate_cli.main(["--workdir", str(tmp_path), "--prompt", prompt]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --prompt is not valid UTF-8 text") and expected in err, err


def test_max_new_tokens_beyond_the_limit_is_refused_with_the_number(tmp_path, capsys):
    args = ["--workdir", str(tmp_path), "--prompt", "x", "--max-new-tokens", "2000000000"]
    assert generate_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--max-new-tokens 2000000000" in err and f"at most {MAX_NEW_TOKENS}" in err, err
    assert "7.5 GiB" in err
    check_sampling_args(MAX_NEW_TOKENS, 1.0, None, None)  # the limit itself is fine
    with pytest.raises(ValueError, match="`max_new_tokens` 1048577: give at most 1048576"):
        check_sampling_args(MAX_NEW_TOKENS + 1, 1.0, None, None)


def test_top_k_above_the_vocabulary_is_refused_naming_its_size(tiny_run, capsys):
    args = ["--workdir", str(tiny_run[0]), "--prompt", "x", "--top-k", "100000"]
    assert generate_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--top-k 100000 is larger than the model's vocabulary (" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sampling_a_checkpoint_step_that_does_not_exist_lists_the_steps(tiny_run, capsys):
    args = ["--workdir", str(tiny_run[0]), "--prompt", "x", "--step", "7"]
    assert generate_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--step 7: there is no checkpoint 7" in err and "the checkpoints are at steps" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_tirex_checkpoint_file_as_a_language_models_init_is_named(tmp_path, capsys):
    ckpt = _folder(tmp_path, {"model.ckpt": "x"}) / "model.ckpt"
    args = ["--config", "xlstm_tiny", "--workdir", str(tmp_path / "run"), "--init-from", str(ckpt)]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "is a TiRex forecaster checkpoint" in err and "--config tirex_tiny" in err, err
    assert "no such folder" not in err


@pytest.mark.parametrize("data", [b"ab\0cd", b"caf\xe9 au lait"])
def test_a_binary_text_file_is_refused_naming_it(tmp_path, data):
    from train.config import DataConfig
    from train.data.text import iter_documents
    from train.errors import DataError

    (tmp_path / "a.txt").write_bytes(data)
    with pytest.raises(DataError, match=r"a\.txt is not UTF-8 text \(byte \d+ is .*binary file"):
        list(iter_documents(DataConfig(path=str(tmp_path / "a.txt"))))


@pytest.mark.parametrize(
    ("name", "hint"),
    [("weights.bin", "given as its folder"), ("series.csv", "data.path=series:FILE"), ("x", "")],
)
def test_a_data_file_of_another_format_is_refused_naming_the_formats(tmp_path, name, hint):
    from train.config import DataConfig
    from train.data.text.documents import check_source
    from train.errors import DataError

    (tmp_path / name).write_bytes(b"\x00\x01binary")
    with pytest.raises(DataError) as e:
        check_source(DataConfig(path=str(tmp_path / name)))
    msg = str(e.value)
    assert "is not a text format the trainer reads (.txt, " in msg and hint in msg, msg
    assert "lower data.seq_len" not in msg


def test_a_tokenizer_flag_that_points_nowhere_names_that_flag(tmp_path, capsys):
    from train import prepare_data

    args = ["--data", str(tmp_path), "--tokenizer", "/no/tok.json", "--out", str(tmp_path / "o")]
    assert prepare_data.main(args) == 2
    err = capsys.readouterr().err
    assert "--tokenizer /no/tok.json: no such file" in err and "--tokenizer bytes" in err, err
    assert "--set" not in err and "data.tokenizer" not in err


def _read_only(monkeypatch, path: Path) -> None:
    """``path`` made read-only by its mode alone: refused also for root, whom the mode
    does not stop from writing."""
    path.chmod(0o444)


def test_a_read_only_forecast_output_is_not_replaced(tmp_path, capsys, monkeypatch):
    from train import forecast as forecast_cli

    files = _folder(tmp_path, {"model.ckpt": "", "in.csv": "a\n1\n", "fc.csv": "mine"})
    _read_only(monkeypatch, files / "fc.csv")
    argv = ["--model", files / "model.ckpt", "--input", files / "in.csv", "--horizon", "2"]
    assert forecast_cli.main([str(a) for a in [*argv, "--output", files / "fc.csv"]]) == 2
    err = capsys.readouterr().err
    assert f"--output {files / 'fc.csv'} is read-only" in err, err
    assert (files / "fc.csv").read_text() == "mine"


def test_read_only_prepared_data_is_not_replaced(tmp_path, capsys, monkeypatch):
    from train import prepare_data

    data = _folder(tmp_path, {"corpus/a.txt": "hello world " * 50})
    out = tmp_path / "tokens"
    args = ["--data", str(data / "corpus"), "--out", str(out)]
    assert prepare_data.main(args) == 0
    before = _snapshot(out)
    _read_only(monkeypatch, out / "train.bin")
    assert prepare_data.main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds files you cannot write (train.bin" in err, err
    assert _snapshot(out) == before


def test_a_batch_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    from helpers import TINY_TRAIN

    workdir = tmp_path / "new" / "run"
    args = ["--config", "xlstm_tiny", "--workdir", str(workdir), "--set", *TINY_TRAIN]
    assert train_cli.main([*args, "train.batch_size=1000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: one train step needs at least ") and "RAM" in err, err
    assert "train.micro_batch_size=" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_a_compiled_step_that_cannot_fit_is_refused_and_the_workdir_left_as_it_was(
    tmp_path, capsys, monkeypatch
):
    from helpers import TINY_TRAIN

    from train.loop import driver, memory

    workdir = tmp_path / "run"
    workdir.mkdir()
    # The real setup, restore and refusal; the compiled step is stood in for (compiling it
    # takes seconds) by a memory analysis whose temporaries exceed the machine's RAM.
    total, _ = memory.machine_ram()
    huge = memory.StepMemory(arguments=0, outputs=0, temporaries=2 * total, aliased=0)
    monkeypatch.setattr(driver, "compile_step", lambda *a: None)
    monkeypatch.setattr(driver, "compile_evaluator", lambda *a: (None, 0, []))
    monkeypatch.setattr(driver.StepMemory, "of", staticmethod(lambda compiled: huge))
    args = ["--config", "xlstm_tiny", "--workdir", str(workdir), "--set", *TINY_TRAIN]
    assert train_cli.main([*args, "train.steps=1", "train.eval_every=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the compiled train step would take this process to about")
    assert "Nothing was written." in err and len(err.strip().splitlines()) == 1, err
    assert "set model.remat=true" in err and "scan_layers" not in err, err  # sLSTM: no scan
    assert list(workdir.iterdir()) == []  # no config.json, checkpoints/, metrics or lock


def test_the_refusal_of_a_step_suggests_only_the_fixes_that_apply():
    import dataclasses

    from train.config.named import load
    from train.loop import memory
    from train.loop.report import report_step_memory
    from xlstm_jax.layers.config import ConfigError

    total, _ = memory.machine_ram()
    huge = memory.StepMemory(arguments=0, outputs=0, temporaries=2 * total, aliased=0)
    large = dataclasses.replace(load("xlstm_large_tiny").model, remat=True)
    with pytest.raises(ConfigError) as e:
        report_step_memory(huge, [], large, lambda _: None)
    assert "model.scan_layers=true" in str(e.value) and "remat" not in str(e.value)
    scanned = dataclasses.replace(large, scan_layers=True)
    with pytest.raises(ConfigError) as e:
        report_step_memory(huge, [], scanned, lambda _: None)
    assert "scan_layers" not in str(e.value) and "micro_batch_size" in str(e.value)


def test_sampling_from_a_forecaster_run_names_the_forecast_command(tmp_path, capsys):
    from train.config.named import load
    from train.config.overrides import to_dict

    run = _folder(tmp_path / "fc", {"config.json": json.dumps(to_dict(load("tirex_tiny")))})
    assert generate_cli.main(["--workdir", str(run), "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert "is a run of a forecaster (tirex), not of a language model" in err, err
    assert f"python -m train.forecast --model {run}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seed", str(2**40)], "--seed 1099511627776: give an integer in [0, 2**32)."),
        (["--seed", "-1"], "--seed -1: give an integer in [0, 2**32)."),
    ],
)
def test_a_seed_jax_would_truncate_is_refused(tmp_path, capsys, argv, expected):
    assert generate_cli.main(["--workdir", str(tmp_path), "--prompt", "a", *argv]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.steps=99999999999999999999999", "give an integer within int64"),
        ("train.steps=2147483648", "train.steps must be >= 1 and < 2**31"),
        ("train.seed=4294967296", "train.seed must be in [0, 2**32)"),
    ],
)
def test_integers_beyond_what_their_counters_hold_are_refused(tmp_path, capsys, setting, expected):
    workdir = tmp_path / "run"
    assert (
        train_cli.main(["--config", "xlstm_tiny", "--workdir", str(workdir), "--set", setting]) == 2
    )
    assert expected in capsys.readouterr().err and not workdir.exists()
