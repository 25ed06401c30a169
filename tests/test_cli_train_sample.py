"""`ddpm train` and `ddpm sample` end to end, and the errors users meet, as a user sees them."""

import gzip
import json
import struct
import subprocess
import sys

import pytest
from PIL import Image

from ddpm import __version__
from ddpm.cli import main
from ddpm.runs.records import read_record

TINY = ["--dataset", "digits", "--dim", "8", "--dim-mults", "1,2", "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "20",
        "--batch-size", "8", "--log-every", "2", "--sample-every", "0", "--save-every", "0", "--num-samples", "4",
        "--sampler", "ddim", "--steps", "4", "--no-tensorboard"]


def run_cli(*args, cwd):
    """The real command in a subprocess: exit status, stdout and stderr as the user sees them."""
    out = subprocess.run([sys.executable, "-m", "ddpm", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr


def test_train_then_sample(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "4", "--runs-dir", str(tmp_path / "runs"), "--name", "cli"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "cli"
    assert f"run directory: {run}" in out and f"ddpm sample --run {run}" in out
    assert (run / "checkpoints" / "step_00000004" / "ema.safetensors").is_file()

    assert main(["sample", "--run", str(run), "--n", "5", "--batch-size", "2", "--seed", "3", "--out", str(tmp_path / "a")]) == 0
    assert main(["sample", "--run", str(run), "--n", "5", "--batch-size", "2", "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "00003.png", "00004.png", "grid.png", "sample.json"]
    for name in names:  # the same seed gives the same images (and the same record)
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with Image.open(tmp_path / "a" / "00000.png") as im:
        assert im.size == (8, 8) and im.mode == "L"
    assert main(["sample", "--run", str(run), "--n", "2", "--seed", "4", "--out", str(tmp_path / "c"), "--sampler", "dpm++2m",
                 "--steps", "5", "--no-ema"]) == 0
    assert (tmp_path / "c" / "00001.png").read_bytes() != (tmp_path / "a" / "00001.png").read_bytes()
    # the final step and thresholding settings reach the sampler: t0 keeps timestep 0's noise
    common = ["sample", "--run", str(run), "--n", "2", "--seed", "4", "--sampler", "unipc3", "--steps", "5"]
    assert main([*common, "--out", str(tmp_path / "d")]) == 0
    assert main([*common, "--out", str(tmp_path / "e"), "--final", "t0", "--clip", "dynamic",
                 "--threshold-percentile", "0.9", "--threshold-max", "1.5"]) == 0
    assert (tmp_path / "d" / "grid.png").read_bytes() != (tmp_path / "e" / "grid.png").read_bytes()
    # an existing, non-empty output directory is left alone
    assert main(["sample", "--run", str(run), "--n", "2", "--out", str(tmp_path / "a")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_class_conditional_sampling_names_files_by_class(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "2", "--class-conditional", "--runs-dir", str(tmp_path), "--name", "cc"]) == 0
    run = tmp_path / "cc"
    out = tmp_path / "per"
    assert main(["sample", "--run", str(run), "--n", "2", "--class", "3", "--class", "7", "--per-class",
                 "--guidance-scale", "2", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000_class3.png", "00001_class3.png", "00002_class7.png", "00003_class7.png", "grid.png",
                     "sample.json"]
    record = json.loads((out / "sample.json").read_text())
    assert record["classes"] == [3, 7] and record["per_class"] is True and record["num_images"] == 4
    assert record["guidance_scale"] == 2.0 and record["run"] == "cc"
    assert read_record(out / "00002_class7.png") == record
    assert main(["sample", "--run", str(run), "--class", "12", "--out", str(tmp_path / "x")]) == 2
    assert "class 12 is out of range; this model knows classes 0 to 9" in capsys.readouterr().err


def _write_idx(path, magic_dtype, dims, payload):
    header = bytes([0, 0, magic_dtype, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + payload)


@pytest.fixture()
def truncated_mnist(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", 8, (10, 28, 28), bytes(100))  # claims 7840 bytes
    _write_idx(d / "train-labels-idx1-ubyte.gz", 8, (10,), bytes(10))
    return d


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "imagenet"], "unknown data set 'imagenet'; choose one of mnist10k, digits, mnist, fashion-mnist, cifar10, flowers102, folder:PATH"),
        (["train", "--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "nowhere"),
        (["train", "--dataset", "mnist", "--data-dir", "{mnist}"],
         "train-images-idx3-ubyte.gz is truncated: its header claims 7840 bytes of data (10x28x28) but only 100 are present"),
        (["train", "--dataset", "mnist", "--data-dir", "{badmagic}"],
         "train-images-idx3-ubyte is not an IDX file: it does not start with the IDX magic bytes 00 00"),
        (["train", "--image-size", "9"], "image size 9x9 cannot be halved 2 times by this Unet (3 levels in dim_mults)"),
        (["train", "--max-steps", "many"], "--max-steps must be an integer; got 'many'"),
        (["train", "--device", "cuda:7"], "device 'cuda:7' was asked for but PyTorch sees no CUDA GPU"),
        (["sample", "--run", "{tmp}/model.pt"], "is not a torch-ddpm checkpoint"),
        (["sample", "--checkpoint", "{tmp}/missing"], "no run or checkpoint at"),
        (["train", "--config", "{tmp}/bad.toml"], "unknown field 'learning_rate' in [train]"),
    ],
)
def test_errors_are_one_sentence_with_status_2(tmp_path, truncated_mnist, args, message):
    (tmp_path / "model.pt").write_bytes(b"not ours")
    (tmp_path / "bad.toml").write_text("[train]\nlearning_rate = 1\n")
    badmagic = tmp_path / "badmagic"
    badmagic.mkdir()
    (badmagic / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04" + bytes(100))
    (badmagic / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 0]))
    args = [a.format(tmp=tmp_path, mnist=truncated_mnist, badmagic=badmagic) for a in args]
    code, out, err = run_cli(*args, "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path) if args[0] == "train" else run_cli(*args, cwd=tmp_path)
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("ddpm: error: ")


def test_resume_with_a_mismatched_config_and_an_existing_run(tmp_path):
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    code, _, err = run_cli("train", "--resume", str(tmp_path / "r"), "--dim", "16", cwd=tmp_path)
    assert code == 2 and "was trained with model.dim = 8, not 16" in err and "Traceback" not in err
    code, _, err = run_cli("train", *TINY, "--runs-dir", str(tmp_path), "--name", "r", cwd=tmp_path)
    assert code == 2 and "already exists" in err
    assert main(["train", "--resume", str(tmp_path / "r"), "--max-steps", "4"]) == 0


def test_usage_errors_exit_2():
    code, _, err = run_cli("train", "--no-such-option", cwd=".")
    assert code == 2 and "unrecognized arguments: --no-such-option" in err and "Traceback" not in err


def test_out_of_memory_on_the_first_step_is_one_sentence(tmp_path, monkeypatch, capsys):
    import torch

    from ddpm.models.unet import Unet

    def no_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Unet, "forward", no_memory)
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "out of memory at step 1 on cpu with batch size 8 and images of 8x8; lower --batch-size" in err


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "ddpm", "train", *TINY, "--max-steps", "100000", "--no-compile",
                             "--runs-dir", str(tmp_path), "--name", "stop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    metrics = tmp_path / "stop" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "checkpoint saved to" in err and "Traceback" not in err
    from ddpm.runs.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "stop").step >= 4


def test_file_system_errors_are_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli("train", *TINY, "--max-steps", "1", "--runs-dir", str(blocker / "runs"), cwd=tmp_path)
    assert code == 2 and "Traceback" not in err and err.startswith("ddpm: error: ") and err.count("\n") == 1


def test_resuming_a_finished_run_keeps_its_checkpoint(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "done"]) == 0
    ckpt = tmp_path / "done" / "checkpoints" / "step_00000002"
    before = ckpt.stat().st_ino
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "done")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"resuming {tmp_path / 'done'} from step 2"
    assert ckpt.stat().st_ino == before  # not rewritten


def test_max_steps_zero_is_refused_before_a_run_is_made(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "0", "--runs-dir", str(tmp_path), "--name", "zero"]) == 2
    assert capsys.readouterr().err == "ddpm: error: --max-steps must be at least 1; got 0\n"
    assert not (tmp_path / "zero").exists()


def test_sample_checks_its_options_before_making_the_output_directory(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "o"]) == 0
    run = tmp_path / "o"
    for bad, message in ((["--n", "0"], "--n and --batch-size must be positive"),
                         (["--steps", "5000"], "steps must be an integer from 1 to the 20 training timesteps"),
                         (["--grid", "foo"], "unknown timestep grid 'foo'"),
                         (["--clip", "foo"], "unknown clip mode 'foo'"),
                         (["--final", "end"], "unknown final step 'end'; choose one of clean, t0"),
                         (["--threshold-percentile", "0"], "threshold_percentile must lie in (0, 1]"),
                         (["--sampler", "unipc2", "--no-clipped-eps"], "--no-clipped-eps applies only to the ddim sampler"),
                         (["--guidance-scale", "3"], "--guidance-scale needs a class-conditional run")):
        out = tmp_path / "never"
        assert main(["sample", "--run", str(run), "--out", str(out), *bad]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_naming_the_raw_weights_file_samples_from_it(tmp_path):
    # a slow EMA and a fast model, so the two sets of weights draw visibly different images
    assert main(["train", *TINY, "--max-steps", "3", "--lr", "0.02", "--ema-decay", "0.99", "--no-ema-warmup",
                 "--runs-dir", str(tmp_path), "--name", "w"]) == 0
    ckpt = tmp_path / "w" / "checkpoints" / "step_00000003"
    for name, flags in (("model", ["--no-ema"]), ("ema", [])):
        assert main(["sample", "--checkpoint", str(ckpt / f"{name}.safetensors"), "--n", "2", "--out", str(tmp_path / name)]) == 0
        assert main(["sample", "--checkpoint", str(ckpt), *flags, "--n", "2", "--out", str(tmp_path / f"{name}-dir")]) == 0
        assert (tmp_path / name / "grid.png").read_bytes() == (tmp_path / f"{name}-dir" / "grid.png").read_bytes()
    assert (tmp_path / "model" / "grid.png").read_bytes() != (tmp_path / "ema" / "grid.png").read_bytes()


def test_sample_folder_records_its_recipe(tmp_path, capsys):
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path), "--name", "rec"]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "rec" / "checkpoints" / "step_00000002"
    # --steps 0 is the sampler's default (dpm++2m: 20, capped at T = 20), and the record says 20
    assert main(["sample", "--run", str(tmp_path / "rec"), "--n", "3", "--batch-size", "2", "--seed", "5", "--no-ema",
                 "--sampler", "dpm++2m", "--steps", "0", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert f"drawing 3 images from {ckpt} (raw weights) with dpm++2m, 20 steps on the tapered grid" in out
    record = json.loads((tmp_path / "s" / "sample.json").read_text())
    assert record == {
        "format": "torch-ddpm sample", "torch_ddpm": __version__, "run": "rec", "checkpoint": str(ckpt), "step": 2,
        "weights": "raw", "sampler": "dpm++2m", "steps": 20, "grid": "tapered", "eta": 0.0, "guidance_scale": 1.0,
        "clip": "static", "threshold_percentile": 0.995, "threshold_max": 0.0, "clipped_eps": True, "final": "clean",
        "classes": None, "per_class": False, "prompts": None, "num_images": 3, "seed": 5, "batch_size": 2,
    }
    for name in ("00000.png", "00002.png", "grid.png"):  # each image carries the same record
        assert read_record(tmp_path / "s" / name) == record
    assert read_record(tmp_path / "s") == record
    # the run's own settings (ddim, 4 steps, the sampler's grid) are written as used
    assert main(["sample", "--run", str(tmp_path / "rec"), "--n", "1", "--out", str(tmp_path / "t")]) == 0
    assert "with ddim, 4 steps on the quadratic grid" in capsys.readouterr().out
    again = read_record(tmp_path / "t" / "00000.png")
    assert (again["sampler"], again["steps"], again["grid"], again["weights"]) == ("ddim", 4, "quadratic", "ema")


def test_captioned_folder_train_then_prompt(tmp_path, capsys):
    """The README's text path: a folder with metadata.jsonl, --text-conditional, --prompt."""
    import json

    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i in range(12):
        colour = "red" if i % 2 else "blue"
        Image.new("RGB", (8, 8), (255, 0, 0) if i % 2 else (0, 0, 255)).save(folder / f"{i:02d}.png")
        rows.append(json.dumps({"file_name": f"{i:02d}.png", "text": f"a {colour} square"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\nnot json\n", encoding="utf-8")
    run = tmp_path / "runs" / "t"
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(tmp_path / "runs"), "--name", "t",
                 "--dataset", f"folder:{folder}", "--image-size", "8", "--text-conditional", "--text-encoder", "builtin",
                 "--builtin-text-dim", "8", "--builtin-text-layers", "0"]) == 0
    out = capsys.readouterr().out
    assert "captions for 12 of 12 images (12 from metadata files, 0 from .txt files); skipped: 1 malformed lines" in out
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na blue square\n", encoding="utf-8")
    args = ["sample", "--run", str(run), "--prompt", "a red square", "--prompts-file", str(prompts), "--n", "3",
            "--guidance-scale", "3", "--seed", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"{i:05d}_prompt{i // 3}.png" for i in range(6)] + ["grid.png", "prompts.txt", "sample.json"]
    assert (tmp_path / "a" / "prompts.txt").read_text() == "0\ta red square\n1\ta blue square\n"
    record = read_record(tmp_path / "a")
    assert record["prompts"] == ["a red square", "a blue square"] and record["num_images"] == 6
    assert read_record(tmp_path / "a" / "00004_prompt1.png") == record and record["guidance_scale"] == 3.0
    for name in names:  # a prompt and a seed give the same images
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with Image.open(tmp_path / "a" / "grid.png") as im:  # 2 rows of 3 (upscaled, padded)
        assert im.width > im.height


def test_a_prompt_on_a_run_without_text_is_refused(tmp_path):
    assert main(["train", *TINY, "--max-steps", "1", "--runs-dir", str(tmp_path), "--name", "plain"]) == 0
    code, _, err = run_cli("sample", "--run", str(tmp_path / "plain"), "--prompt", "a handwritten seven",
                           "--out", str(tmp_path / "never"), cwd=tmp_path)
    assert code == 2 and not (tmp_path / "never").exists()
    assert err.strip() == ("ddpm: error: --prompt needs a text-conditional run (trained with --text-conditional); "
                           "this run was trained without captions")


def _squares(folder, n):
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (5 * i, 0, 255 - 5 * i)).save(folder / f"{i:02d}.png")
    return folder


def test_a_folder_smaller_than_a_batch_is_refused_before_a_run_is_made(tmp_path, capsys):
    folder = _squares(tmp_path / "imgs", 48)
    runs = tmp_path / "runs"
    args = ["train", "--dataset", f"folder:{folder}", "--image-size", "8", "--dim", "8", "--dim-mults", "1,2",
            "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "20", "--sample-every", "0", "--save-every", "0",
            "--num-samples", "4", "--sampler", "ddim", "--steps", "4", "--no-tensorboard", "--max-steps", "1",
            "--runs-dir", str(runs), "--name", "small"]
    code, _, err = run_cli(*args, cwd=tmp_path)  # the default batch of 64
    assert code == 2 and "Traceback" not in err
    assert err == ("ddpm: error: the data set has 48 images, fewer than one batch of 64; lower --batch-size\n")
    assert not runs.exists()  # not the run, nor the runs folder made for it
    assert main([*args, "--batch-size", "8"]) == 0  # the same name is free
    out = capsys.readouterr().out
    assert out.count("reading 48 images from") == 1 and "streaming" not in out  # read into memory, and said so once
    assert (runs / "small" / "checkpoints").is_dir()


def test_a_start_that_fails_after_its_directory_exists_removes_it_and_keeps_the_run_it_would_replace(
        tmp_path, monkeypatch, capsys):
    from ddpm.errors import CheckpointError
    from ddpm.training import text_setup

    folder = tmp_path / "imgs"
    _squares(folder, 8)
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{i:02d}.png", "text": f"square {i}"})
                                                     for i in range(8)), encoding="utf-8")
    runs = tmp_path / "runs"
    text = ["--dataset", f"folder:{folder}", "--image-size", "8", "--text-conditional", "--text-encoder", "builtin",
            "--builtin-text-dim", "8", "--builtin-text-layers", "0"]
    assert main(["train", *TINY, "--max-steps", "2", "--runs-dir", str(runs), "--name", "old"]) == 0
    before = {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file()}

    def unreadable(*args, **kwargs):  # the encoder is built once the run directory exists (its embeddings live there)
        raise CheckpointError("cannot read the MiniLM files in /nowhere (OSError: damaged); reinstall them")

    monkeypatch.setattr(text_setup, "make_text_encoder", unreadable)
    capsys.readouterr()
    assert main(["train", *TINY, *text, "--max-steps", "2", "--runs-dir", str(runs), "--name", "new"]) == 2
    assert capsys.readouterr().err == "ddpm: error: cannot read the MiniLM files in /nowhere (OSError: damaged); reinstall them\n"
    assert sorted(p.name for p in runs.iterdir()) == ["old"]  # the failed start's directory is gone
    # a refused --overwrite leaves the run it would have replaced as it was, early or late
    assert main(["train", *TINY, "--batch-size", "4096", "--max-steps", "2", "--runs-dir", str(runs), "--name", "old",
                 "--overwrite"]) == 2
    assert main(["train", *TINY, *text, "--max-steps", "2", "--runs-dir", str(runs), "--name", "old", "--overwrite"]) == 2
    assert sorted(p.name for p in runs.iterdir()) == ["old"]
    assert {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    assert main(["train", *TINY, *text, "--max-steps", "2", "--runs-dir", str(runs), "--name", "old", "--overwrite"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["old"] and (runs / "old" / "caption_embeddings.safetensors").is_file()
