import dataclasses
import subprocess
import sys
from typing import Literal

import pytest

from genrm_rl.config import from_dict, load_config, option, parse_cli


@dataclasses.dataclass
class Inner:
    lr: float = option(1e-3, help="learning rate")
    steps: int = option(10, help="steps")


@dataclasses.dataclass
class Outer:
    name: str = option("x", help="name")
    mode: Literal["a", "b"] = option("a", help="mode")
    inner: Inner = option(Inner, help="nested")
    files: list[str] = option([], help="files")
    scores: dict[str, str] = option({}, help="name=path")
    flag: bool = option(False, help="flag")
    maybe: int | None = option(None, help="optional")

    def __post_init__(self):
        if self.inner.steps < 0:
            raise ValueError("inner.steps must be >= 0")


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run1\ninner:\n  lr: 1e-4\nfiles: [a, b]\n")
    cfg = load_config(Outer, path, ["inner.steps=5", "flag=true", "maybe=none", "scores.cot=a.jsonl"])
    assert cfg.name == "run1" and cfg.inner.lr == 1e-4 and cfg.inner.steps == 5
    assert cfg.files == ["a", "b"] and cfg.flag is True and cfg.maybe is None
    assert cfg.scores == {"cot": "a.jsonl"}
    for text, want in (("files=[c, d]", ["c", "d"]), ("files=[]", []), ("files=e,f", ["e", "f"])):
        assert load_config(Outer, path, [text]).files == want
    with pytest.raises(ValueError, match="files"):
        load_config(Outer, path, ["files=[a, [b]]"])


def test_include_lays_a_file_over_another(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text("name: base\ninner:\n  lr: 1e-4\n  steps: 3\nfiles: [a]\n")
    (tmp_path / "v.yaml").write_text("include: base/b.yaml\ninner:\n  steps: 7\n")  # relative to v.yaml
    cfg = load_config(Outer, tmp_path / "v.yaml", ["name=cli"])
    assert (cfg.name, cfg.inner.lr, cfg.inner.steps, cfg.files) == ("cli", 1e-4, 7, ["a"])
    (tmp_path / "x.yaml").write_text("include: y.yaml\n")
    (tmp_path / "y.yaml").write_text("include: x.yaml\n")
    with pytest.raises(ValueError, match="config include cycle"):
        load_config(Outer, tmp_path / "x.yaml")
    (tmp_path / "m.yaml").write_text("include: nowhere.yaml\n")
    with pytest.raises(ValueError, match=r"config file not found: .*nowhere.yaml \(included from"):
        load_config(Outer, tmp_path / "m.yaml")


def test_paper_cpu_is_the_quickstart_on_three_seeds():
    from genrm_rl.config import to_dict
    from jobs.pipeline import ReproduceConfig

    quick, paper = (to_dict(load_config(ReproduceConfig, f"configs/{name}.yaml")) for name in ("quickstart", "paper_cpu"))
    assert paper.pop("seeds") == [0, 1, 2] and paper.pop("output_dir") == "runs/paper_cpu"
    assert (quick.pop("train_launcher"), paper.pop("train_launcher")) == ("ray", "local")  # same weights
    assert {k: v for k, v in quick.items() if k not in ("seeds", "output_dir")} == paper


def test_misspelt_key_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'inner.lrr' \(did you mean 'inner.lr'\?\)"):
        load_config(Outer, path)
    with pytest.raises(ValueError, match="unknown config key 'nmae'"):
        from_dict(Outer, {"nmae": "x"})


def test_wrong_type_names_the_key():
    with pytest.raises(ValueError, match=r"config key 'inner.steps': expected int, got 'many'"):
        from_dict(Outer, {"inner": {"steps": "many"}})
    with pytest.raises(ValueError, match="config key 'mode'"):
        from_dict(Outer, {"mode": "c"})
    with pytest.raises(ValueError, match="config key 'flag'"):
        from_dict(Outer, {"flag": "maybe"})
    with pytest.raises(ValueError, match="config key 'inner.steps'"):
        from_dict(Outer, {"inner": {"steps": True}})  # a bool is not an int


def test_post_init_validation_and_cli(capsys):
    with pytest.raises(ValueError, match="inner.steps must be >= 0"):
        from_dict(Outer, {"inner": {"steps": -1}})
    cfg = parse_cli(Outer, ["--inner.lr", "0.5", "--scores", "a=x.jsonl", "--scores", "b=y.jsonl", "name=z"], "prog")
    assert cfg.inner.lr == 0.5 and cfg.scores == {"a": "x.jsonl", "b": "y.jsonl"} and cfg.name == "z"
    with pytest.raises(SystemExit):
        parse_cli(Outer, ["--inner.stepz", "3"], "prog")
    assert "did you mean '--inner.steps'" in capsys.readouterr().err


def test_real_job_config_rejects_bad_yaml(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("objective: genrm_cot\nmodel: m\nmicro_batch_sise: 4\n")
    from genrm_rl.training.config import TrainConfig

    with pytest.raises(ValueError, match="micro_batch_sise.*did you mean 'micro_batch_size'"):
        load_config(TrainConfig, path)


def test_import_is_light():
    code = "import sys, genrm_rl, genrm_rl.config; bad = {'ray','deepspeed','trl','transformers','torch'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_cli_help_lists_jobs_and_each_job_has_help():
    out = subprocess.run([sys.executable, "-m", "genrm_rl.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for job in ("data", "train", "serve", "score", "rl", "eval", "bench", "reproduce"):
        assert job in out
    out = subprocess.run([sys.executable, "-m", "jobs.train_genrm", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--gen_weight" in out and "λ" in out


def test_every_option_help_renders_literally():
    """argparse treats help text as a %-format; an option whose help says "12%" once crashed --help."""
    from genrm_rl.config import build_parser
    from genrm_rl.training.config import TrainConfig
    from jobs.pipeline import ReproduceConfig

    for cls in (ReproduceConfig, TrainConfig):
        text = build_parser(cls, "job").format_help()
        assert "--seed" in text
    assert "5% less stage time" in " ".join(build_parser(ReproduceConfig, "reproduce").format_help().split())


@pytest.mark.parametrize(("name", "cls_path", "extra"), [
    ("quickstart.yaml", "jobs.pipeline:ReproduceConfig", []),
    ("word_sort.yaml", "jobs.pipeline:ReproduceConfig", []),
    ("word_sort_spelled.yaml", "jobs.pipeline:ReproduceConfig", []),
    ("paper_cpu.yaml", "jobs.pipeline:ReproduceConfig", []),
    ("gpu_preset.yaml", "jobs.pipeline:ReproduceConfig", []),
    ("train_genrm_cot.yaml", "genrm_rl.training.config:TrainConfig", []),
    ("train_gsm8k_released.yaml", "genrm_rl.training.config:TrainConfig", []),
    ("serve.yaml", "reward.config:ServeConfig", []),
    ("rl_grpo.yaml", "jobs.rl_grpo:RLConfig", ["policy=p", "reward.verifier.model=m"]),
])
def test_shipped_configs_load(name, cls_path, extra):
    import importlib
    from pathlib import Path

    module, _, cls = cls_path.partition(":")
    path = Path(__file__).resolve().parents[1] / "configs" / name
    load_config(getattr(importlib.import_module(module), cls), path, extra)


def test_shipped_deepspeed_templates_are_complete():
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.ds_config import build_deepspeed_config

    for stage in (2, 3):
        cfg = from_dict(TrainConfig, {"model": "m", "deepspeed": {"zero_stage": stage}})
        ds = build_deepspeed_config(cfg, world_size=2, total_steps=10, on_gpu=False)
        assert ds["zero_optimization"]["stage"] == stage


def test_job_logging_shows_a_library_warning_once_whatever_its_call_site():
    """TRL warns about the vLLM version from five import sites; a job's console says it once."""
    import logging
    import warnings

    from jobs._common import setup_logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("py.warnings")
    logging.captureWarnings(False)  # pytest swapped `showwarning` for this test: capture from here
    try:
        setup_logging()
        logger.addHandler(handler)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            for site in (1, 2, 3):
                warnings.warn_explicit("vLLM 9.9 is outside the tested range", UserWarning, f"site{site}.py", site)
            warnings.warn_explicit("a different warning", UserWarning, "site1.py", 7)
    finally:
        logger.removeHandler(handler)
        logging.captureWarnings(False)
    texts = [r.getMessage().split("UserWarning: ", 1)[1].splitlines()[0] for r in records]
    assert texts == ["vLLM 9.9 is outside the tested range", "a different warning"]
