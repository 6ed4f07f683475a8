"""params.yaml is checked when it is read: every value against its field's type hint, ranges of
fractions and counts, task names, and the file itself must exist. Each error is one line naming
the dotted key (or the path), the value and what is allowed."""

import json
import subprocess
import sys

import pytest

from prefsynth.config import load_params


def _load(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return load_params(path)


@pytest.mark.parametrize("data, message", [
    ({"prompts": {"num_shards": "two"}}, "'prompts.num_shards' is 'two'; allowed: an integer"),
    ({"prompts": {"max_prompt_chars": "lots"}}, "'prompts.max_prompt_chars' is 'lots'; allowed: an integer"),
    ({"prompts": {"question_field": ["question"]}}, "'prompts.question_field' is ['question']; allowed: a string"),
    ({"prompts": {"answer_field": 3}}, "'prompts.answer_field' is 3; allowed: a string or null"),
    ({"prompts": {"task": "gsm9k"}}, "'prompts.task' is 'gsm9k'; allowed: one of ['arith', "),
    ({"prompts": "jsonl"}, "'prompts' is 'jsonl'; allowed: a group of keys (PromptsConfig: source, path"),
    ({"prompts": {"test_fraction": 5}}, "'prompts.test_fraction' is 5; allowed: a fraction in [0, 1]"),
    ({"seed": "abc"}, "'seed' is 'abc'; allowed: an integer"),
    ({"seed": 1.5}, "'seed' is 1.5; allowed: an integer"),
    ({"generate": {"resume": "yes"}}, "'generate.resume' is 'yes'; allowed: true or false"),
    ({"generate": {"stop": "\n"}}, "'generate.stop' is '\\n'; allowed: a list"),
    ({"generate": {"n": 0}}, "'generate.n' is 0; allowed: an integer >= 1"),
    ({"policy": {"batch_size": -1}}, "'policy.batch_size' is -1; allowed: an integer >= 1"),
    ({"label": {"responses_per_batch": 0}}, "'label.responses_per_batch' is 0; allowed: an integer >= 1"),
    ({"policy": {"max_retries": -2}}, "'policy.max_retries' is -2; allowed: an integer >= 0"),
    ({"beam": {"presets": []}}, "'beam.presets' is []; allowed: a mapping"),
    ({"mcts": {"search": {"c_puct": "high"}}}, "'mcts.search.c_puct' is 'high'; allowed: a number"),
    ({"label": {"mc": {"rollouts": True}}}, "'label.mc.rollouts' is True; allowed: an integer"),
    ({"pairs": {"upo": {"keep_fraction": 1.5}}}, "'pairs.upo.keep_fraction' is 1.5; allowed: a fraction"),
    ({"candidates": {"step_dpo_span": "suffix"}}, "candidates.step_dpo_span must be one of step, rest, full, sampled, got 'suffix'"),
    ({"max_dead_fraction": -0.1}, "'max_dead_fraction' is -0.1; allowed: a fraction in [0, 1]"),
    ({"prompts": {"n_promts": 3}}, "unknown key(s) ['n_promts'] in 'prompts'"),
])
def test_bad_values_are_one_line_naming_the_key_the_value_and_what_is_allowed(tmp_path, data, message):
    with pytest.raises(ValueError) as err:
        _load(tmp_path, data)
    text = str(err.value)
    assert message in text and "\n" not in text, text


def test_good_values_keep_working(tmp_path):
    p = _load(tmp_path, "bootstrap: {learning_rate: 1e-4}\n"  # YAML 1.1 reads 1e-4 as a string
                        "policy: {timeout_s: 5, vocab_size: null, model: m}\n"  # an int for a float
                        "generate: {temperature: 0, stop: [\"\\n\\n\"]}\nprompts: {task: gsm8k, test_fraction: 1}\n"
                        "max_dead_fraction: 1\n")
    assert p.bootstrap.learning_rate == 1e-4 and p.policy.timeout_s == 5 and p.generate.temperature == 0
    assert p.prompts.task == "gsm8k" and p.max_dead_fraction == 1
    assert _load(tmp_path, "").max_dead_fraction == 0.5  # an empty file: the defaults
    assert load_params(None).prompts.n_prompts == 3000  # explicitly no file: the defaults


def test_the_repo_params_and_overrides_load(repo):
    p = load_params(repo / "params.yaml", {"generate.n": 2, "critic.heldout_fraction": 0.3})
    assert p.generate.n == 2 and p.critic.heldout_fraction == 0.3
    with pytest.raises(ValueError, match="'generate.n' is 'x'"):
        load_params(repo / "params.yaml", {"generate.n": "x"})


def test_a_params_path_that_does_not_exist_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope" / "params.yaml"
    with pytest.raises(FileNotFoundError, match=f"params file not found: '{missing}'"):
        load_params(missing)


def test_the_cli_names_a_missing_params_file(tmp_path):
    missing = tmp_path / "typo.yaml"
    proc = subprocess.run([sys.executable, "-m", "prefsynth", "prompts", "--params", str(missing), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"params file not found: '{missing}'" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing ran: not the built-in 3000 arith prompts
