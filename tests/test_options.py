import pytest
import yaml

from prefsynth.config import BeamConfig, load_params
from prefsynth.pipelines.options import options_dict, pipeline_options


def test_local_default_is_offline_fnapi():
    opts = pipeline_options(BeamConfig()).get_all_options()
    assert opts["runner"] == "FnApiRunner"
    assert opts["direct_num_workers"] == 1


def test_more_workers_run_in_processes():
    d = options_dict(BeamConfig(direct_num_workers=2))
    assert d["direct_running_mode"] == "multi_processing" and d["direct_num_workers"] == 2


def test_presets_from_params_yaml(repo):
    params = load_params(repo / "params.yaml")
    for preset, runner in (("flink", "PortableRunner"), ("dataflow", "DataflowRunner")):
        cfg = BeamConfig(**{**params.beam.__dict__, "preset": preset})
        opts = pipeline_options(cfg).get_all_options()
        assert opts["runner"] == runner
        for key, value in params.beam.presets[preset].items():
            assert opts[key] == value, key


def test_unknown_preset_and_bad_mode_are_named():
    with pytest.raises(ValueError, match="beam.preset='spark'"):
        options_dict(BeamConfig(preset="spark"))
    with pytest.raises(ValueError, match="direct_running_mode"):
        options_dict(BeamConfig(direct_running_mode="threads"))


def test_every_param_in_params_yaml_is_known_and_documented(repo):
    import dataclasses

    from prefsynth.config import Params

    load_params(repo / "params.yaml")  # raises on unknown keys
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for group in ("beam", "prompts", "prompting", "bootstrap", "policy", "generate", "mcts", "label", "candidates", "pairs", "card",
                  "critic", "critiques", "train", "evaluate"):
        cls = type(getattr(Params(), group))
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{group}.{f.name} has no help"
            assert f.name in raw[group], f"{group}.{f.name} is missing from params.yaml"
