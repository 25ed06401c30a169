import pytest

from ddpm.config import RunConfig, apply_overrides, field_help, field_index, from_dict, load_toml, to_dict, to_toml
from ddpm.errors import ConfigError


def test_every_field_name_is_unique_and_typed():
    index = field_index()
    assert index["max_steps"][0] == "train" and index["dim_mults"][0] == "model"
    assert index["name"][0] is None
    assert len(index) > 40


def test_toml_round_trip(tmp_path):
    config = apply_overrides(RunConfig(), {"dim_mults": "1,2,4", "lr": "3e-4", "hflip": "true", "image_size": "16,24",
                                           "dataset": "folder:/tmp/x y", "name": 'q"uote'})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    again = load_toml(path)
    assert again == config
    assert again.model.dim_mults == (1, 2, 4) and again.train.lr == 3e-4 and again.data.hflip is True
    assert again.data.image_size == (16, 24)
    assert to_dict(again)["model"]["dim_mults"] == [1, 2, 4]


def test_toml_accepts_ints_for_floats_and_a_scalar_for_a_list(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 1\n[data]\nimage_size = 32\n")
    config = load_toml(path)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.data.image_size == (32,)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nlearning_rate = 1\n", "unknown field 'learning_rate' in [train] of"),
        ("[train]\nlr = 'fast'\n", "train.lr in"),
        ("[train]\nmax_steps = 1.5\n", "must be an integer; got 1.5"),
        ("[optim]\nlr = 1\n", "unknown section or field 'optim'"),
        ("[model]\ndim_mults = 'abc'\n", "must be a list of integers"),
        ("[train\n", "is not valid TOML"),
        ("[data]\nhflip = 1\n", "data.hflip in"),
    ],
)
def test_bad_config_files_get_one_sentence(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_toml(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_overrides():
    with pytest.raises(ConfigError, match="--max-steps must be an integer; got 'lots'"):
        apply_overrides(RunConfig(), {"max_steps": "lots"})
    with pytest.raises(ConfigError, match="--bf16 must be true, false or 'auto'; got 'maybe'"):
        apply_overrides(RunConfig(), {"bf16": "maybe"})
    with pytest.raises(ConfigError, match="unknown config field 'speed'"):
        apply_overrides(RunConfig(), {"speed": "1"})


def test_bf16_is_true_false_or_auto_in_toml_json_and_on_the_command_line(tmp_path):
    from ddpm.cli import build_parser, config_overrides

    assert RunConfig().train.bf16 is None  # auto: decided by the device (ddpm.runs.build.use_bf16)
    assert "bf16 = \"auto\"" in to_toml(RunConfig()) and to_dict(RunConfig())["train"]["bf16"] == "auto"
    for text, want in (('"auto"', None), ("true", True), ("false", False)):
        path = tmp_path / "c.toml"
        path.write_text(f"[train]\nbf16 = {text}\n")
        config = load_toml(path)
        assert config.train.bf16 is want
        assert from_dict(to_dict(config)).train.bf16 is want  # the JSON in a checkpoint
        path.write_text(to_toml(config))
        assert load_toml(path).train.bf16 is want
    for bad in ('"yes"', "1"):
        (tmp_path / "bad.toml").write_text(f"[train]\nbf16 = {bad}\n")
        with pytest.raises(ConfigError, match=r"train.bf16 in .* must be true, false or 'auto'; got"):
            load_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="--channels-last must be true or false; got 'auto'"):  # plain switches have no auto
        apply_overrides(RunConfig(), {"channels_last": "auto"})
    parser = build_parser()
    for argv, want in ((["--bf16"], True), (["--no-bf16"], False), (["--bf16", "auto"], None), (["--bf16", "false"], False), ([], None)):
        overrides = config_overrides(parser.parse_args(["train", *argv]))
        assert apply_overrides(RunConfig(), overrides).train.bf16 is want, argv


def test_guidance_is_a_number_or_auto_in_toml_json_and_on_the_command_line(tmp_path):
    from ddpm.cli import build_parser, config_overrides

    assert RunConfig().sample.guidance_scale is None  # auto: decided by the run (resolved_guidance)
    assert 'guidance_scale = "auto"' in to_toml(RunConfig())
    for text, want in (('"auto"', None), ("3", 3.0), ("1.5", 1.5)):
        path = tmp_path / "c.toml"
        path.write_text(f"[sample]\nguidance_scale = {text}\n")
        config = load_toml(path)
        assert config.sample.guidance_scale == want and type(config.sample.guidance_scale) is type(want)
        assert from_dict(to_dict(config)).sample.guidance_scale == want  # the JSON in a checkpoint
        path.write_text(to_toml(config))
        assert load_toml(path).sample.guidance_scale == want
    for bad in ('"strong"', "true"):
        (tmp_path / "bad.toml").write_text(f"[sample]\nguidance_scale = {bad}\n")
        with pytest.raises(ConfigError, match=r"sample.guidance_scale in .* must be a number or 'auto'; got"):
            load_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="--guidance-scale must be a number or 'auto'; got 'lots'"):
        apply_overrides(RunConfig(), {"guidance_scale": "lots"})
    parser = build_parser()
    for argv, want in ((["--guidance-scale", "2.5"], 2.5), (["--guidance-scale", "auto"], None), ([], None)):
        overrides = config_overrides(parser.parse_args(["train", *argv]))
        assert apply_overrides(RunConfig(), overrides).sample.guidance_scale == want, argv


def test_auto_guidance_and_auto_class_conditioning_resolve_as_documented():
    from ddpm.config import DataConfig, resolved_guidance
    from ddpm.training.setup import resolved_class_conditional

    assert resolved_guidance(None, True) == 2.0 and resolved_guidance(None, False) == 1.0
    assert resolved_guidance(1.0, True) == 1.0 and resolved_guidance(3.0, True) == 3.0  # a number is kept
    assert "auto: 2 for class-conditional runs, 1 for the others" in field_help("guidance_scale")
    assert resolved_class_conditional(DataConfig()) is True  # the default data set, mnist10k
    assert resolved_class_conditional(DataConfig(text_conditional=True)) is False
    assert resolved_class_conditional(DataConfig(class_conditional=False)) is False
    assert resolved_class_conditional(DataConfig(dataset="mnist")) is True
    for dataset in ("digits", "fashion-mnist", "cifar10", "flowers102", "folder:x"):
        assert resolved_class_conditional(DataConfig(dataset=dataset)) is False, dataset
        assert resolved_class_conditional(DataConfig(dataset=dataset, class_conditional=True)) is True
    assert "auto: on for the MNIST digits (mnist10k" in field_help("class_conditional")


def test_overrides_leave_the_original_alone():
    base = RunConfig()
    apply_overrides(base, {"max_steps": "7"})
    assert base.train.max_steps == RunConfig().train.max_steps


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config file /nonexistent.toml"):
        load_toml("/nonexistent.toml")


def test_from_dict_rejects_non_tables():
    with pytest.raises(ConfigError, match=r"\[train\] in the config must be a table"):
        from_dict({"train": 3})


# ---- help text: every field explains itself ----------------------------------------------------

FREE_TEXT_FIELDS = {"name", "runs_dir", "data_dir", "cache_dir", "device", "teacher", "init_from",
                    "diffusers_unet"}  # paths, device names, an imported network's JSON config: no fixed list


def test_every_field_has_one_line_of_help():
    from ddpm.config import field_help

    missing = [name for name in field_index() if not field_help(name).strip()]
    assert not missing, f"config fields without help (give them opt(default, 'meaning')): {missing}"
    assert all("\n" not in field_help(name) for name in field_index())


def test_text_fields_list_the_values_their_registry_accepts():
    from ddpm.config import field_choices
    from ddpm.data import DATASET_NAMES
    from ddpm.diffusion import CLIP_MODES, OBJECTIVES
    from ddpm.losses import LOSS_TYPES
    from ddpm.models.layers import ATTENTION_IMPLS
    from ddpm.sampling import GRIDS, SAMPLERS
    from ddpm.schedules import SCHEDULES

    assert field_choices("sampler") == tuple(SAMPLERS)
    assert field_choices("grid") == GRIDS
    assert field_choices("beta_schedule") == SCHEDULES
    assert field_choices("objective") == OBJECTIVES
    assert field_choices("loss_type") == LOSS_TYPES
    assert field_choices("clip") == CLIP_MODES
    assert field_choices("dataset") == DATASET_NAMES
    assert field_choices("attn_impl") == ATTENTION_IMPLS
    # a text field added later needs its registry (or a place in the free-text list)
    unlisted = [n for n, (_s, _f, tp) in field_index().items() if tp is str and n not in FREE_TEXT_FIELDS and not field_choices(n)]
    assert not unlisted, f"text fields without opt(..., choices=True): {unlisted}"


def _python(code):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_every_text_field_with_choices_has_them_registered_by_its_owner():
    """The modules that own the names (ddpm.sampling.registry, ddpm.data, ...) register them at import;
    the package and its command together import every owner, so every --help lists them."""
    out = _python(
        "import ddpm, ddpm.cli\n"
        "from ddpm.config import field_choices, field_index, has_choices\n"
        "for name, (_s, _f, tp) in field_index().items():\n"
        "    if has_choices(name):\n"
        "        assert tp is str and field_choices(name), name\n"
        "        print(name)\n"
    )
    assert {"sampler", "grid", "final", "objective", "student_objective", "clip", "loss_type", "beta_schedule",
            "dataset", "text_encoder", "attn_impl", "distill_weighting"} <= set(out.split())


def test_config_imports_none_of_the_modules_that_own_choices():
    """config is the lowest layer: the owners import it, never the reverse. The package's __init__ (which
    imports them all) is bypassed by importing ddpm.config under an empty parent package."""
    out = _python(
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('ddpm')\n"
        "pkg = types.ModuleType('ddpm'); pkg.__path__ = list(spec.submodule_search_locations); sys.modules['ddpm'] = pkg\n"
        "import ddpm.config\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('ddpm.'))))\n"
    )
    assert set(out.split()) == {"ddpm.config", "ddpm.config.codec", "ddpm.config.schema", "ddpm.errors"}


def test_choices_are_registered_only_for_fields_that_take_them():
    from ddpm.config import register_choices

    for name in ("steps", "device", "no_such_field"):
        with pytest.raises(ValueError, match=f"config field '{name}' does not take registered choices"):
            register_choices(name, ("a", "b"))


def test_help_says_what_zero_and_empty_mean():
    from ddpm.config import field_help, option_help
    from ddpm.sampling import DEFAULT_STEPS

    for name, (_s, f, _tp) in field_index().items():
        if f.default in ("", ()):
            assert "empty:" in field_help(name), name
    for name in ("channels", "steps", "num_classes", "max_minutes", "grad_clip", "min_snr_gamma", "sample_every", "save_every"):
        assert "0:" in field_help(name) or "0 turns" in field_help(name), name
    steps = field_help("steps")  # the numbers quoted are the registry's
    assert f"{DEFAULT_STEPS['ddim']} for ddim" in steps and f"{DEFAULT_STEPS['dpm++2m']} for dpm++" in steps
    assert DEFAULT_STEPS["ancestral"] is None and "all T for ancestral" in steps
    assert option_help("grid").endswith("(default: empty) [sample]")
    assert "one of: linear, scaled_linear, cosine, sigmoid (default: cosine) [diffusion]" in option_help("beta_schedule")
    assert option_help("bf16").endswith("(default: auto) [train]")
    assert option_help("hflip").endswith("(default: false) [data]")
    assert "a list of integers, comma-separated (default: 1,2,4) [model]" in option_help("dim_mults")
