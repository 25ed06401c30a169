import subprocess
import sys

from ddpm import __version__
from ddpm.cli import main


def test_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert capsys.readouterr().out.strip() == f"torch-ddpm {__version__}"
    assert main([]) == 0
    assert "usage: ddpm" in capsys.readouterr().out


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "ddpm", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"torch-ddpm {__version__}"


def _help(capsys, monkeypatch, *command):
    import pytest

    monkeypatch.setenv("COLUMNS", "250")  # one line per option, whatever the terminal
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def _option_line(text, flag):
    """The option's entry: its line and the indented help under it, joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().split(" ")[0].rstrip(",") == flag)
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 5) or line.strip().startswith("-"):
            break
        entry.append(line.strip())
    return " ".join(entry)


def test_train_help_explains_every_option(capsys, monkeypatch):
    from ddpm.config import field_index
    from ddpm.sampling import SAMPLERS

    text = _help(capsys, monkeypatch, "train")
    usage = text.split("\n\n")[0]
    assert "[--bf16 [auto|true|false]] [--no-bf16]" in usage
    for name, (section, _f, _t) in field_index().items():
        if section == "distill":  # ddpm distill's options, not train's
            assert f"--{name.replace('_', '-')} " not in text
            continue
        line = _option_line(text, "--" + name.replace("_", "-"))
        assert "(default: " in line and "(no description)" not in line, line
    assert f"one of: {', '.join(SAMPLERS)} (default: dpm++2m) [sample]" in _option_line(text, "--sampler")
    assert "0: the data set's own (default: 0) [data]" in _option_line(text, "--channels")
    assert "one of: mnist10k, digits, mnist, fashion-mnist, cifar10, flowers102, folder:PATH" in _option_line(text, "--dataset")
    assert "the same as --bf16 false" in _option_line(text, "--no-bf16")


def test_sample_eval_viz_help_gives_every_option_a_meaning_and_a_default(capsys, monkeypatch):
    import argparse

    from ddpm.cli import build_parser
    from ddpm.eval.report import FEATURES
    from ddpm.sampling import GRIDS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("sample", "eval", "viz", "inpaint", "img2img"):
        for action in sub.choices[command]._actions:
            assert action.help, f"ddpm {command} {action.option_strings or action.dest} has no help"
    ev = _help(capsys, monkeypatch, "eval")
    assert "(default: 1000)" in _option_line(ev, "--num-samples")
    assert "(default: 250)" in _option_line(ev, "--batch-size") and "(default: 0)" in _option_line(ev, "--seed")
    features = next(a for a in sub.choices["eval"]._actions if a.dest == "features")
    assert tuple(features.choices) == FEATURES
    sample = _help(capsys, monkeypatch, "sample")
    assert f"one of: {', '.join(GRIDS)} (default: the run's own [sample] setting)" in _option_line(sample, "--grid")
    assert "0: the sampler's default" in _option_line(sample, "--steps")
    assert "(default: 64)" in _option_line(sample, "--n") and "(default: auto)" in _option_line(sample, "--device")
    viz = _help(capsys, monkeypatch, "viz")
    assert "one of: linear, scaled_linear, cosine, sigmoid (default: linear)" in _option_line(viz, "--schedule")


def test_an_interrupted_torchrun_job_is_reported_by_rank_0_alone(capsys, monkeypatch):
    import ddpm.training.loop as loop

    for is_main, said in ((True, "ddpm: interrupted at step 3\n"), (False, "")):
        def stopped(*args, is_main=is_main, **kwargs):
            raise loop.TrainingInterrupted("interrupted at step 3", is_main)

        monkeypatch.setattr(loop, "train", stopped)
        assert main(["train", "--dataset", "digits"]) == 130
        assert capsys.readouterr().err == said


def test_the_sampling_options_of_each_command_are_read_back_by_one_function():
    from ddpm.cli import build_parser
    from ddpm.cli.options import sampling_settings
    from ddpm.sampling import inpaint

    parser = build_parser()
    everything = {"sampler", "steps", "eta", "grid", "clip", "guidance_scale", "final", "threshold_percentile",
                  "threshold_max", "clipped_eps"}
    commands = {  # the command line without sampling options -> the sampling settings it takes
        ("sample", "--run", "R"): everything,
        ("eval", "--run", "R"): everything,
        ("inpaint", "--run", "R", "--image", "I", "--box", "0,0,1,1"): {"steps", "grid", "clip", "guidance_scale"},
        ("img2img", "--run", "R", "--image", "I"): {"sampler", "steps", "eta", "grid", "clip", "guidance_scale"},
        ("viz", "reverse"): {"sampler", "steps", "eta", "guidance_scale"},
        ("serve",): set(),
    }
    given = {"sampler": ("--sampler", "ddim", "ddim"), "steps": ("--steps", "7", 7), "eta": ("--eta", "0.5", 0.5),
             "grid": ("--grid", "karras", "karras"), "clip": ("--clip", "none", "none"),
             "guidance_scale": ("--guidance-scale", "3", 3.0), "final": ("--final", "t0", "t0"),
             "threshold_percentile": ("--threshold-percentile", "0.9", 0.9), "threshold_max": ("--threshold-max", "2", 2.0),
             "clipped_eps": ("--no-clipped-eps", None, False)}
    for argv, names in commands.items():
        unset = sampling_settings(parser.parse_args(argv))
        assert set(unset) == names, argv
        assert unset == {n: inpaint.DEFAULT_GRID if (argv[0], n) == ("inpaint", "grid") else None for n in names}, argv
        flags = [part for n in names for part in given[n][:2] if part is not None]
        assert sampling_settings(parser.parse_args([*argv, *flags])) == {n: given[n][2] for n in names}, argv
