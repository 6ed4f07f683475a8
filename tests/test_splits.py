"""train / validation / test splits: hash-stable, validation carved from the train side."""

from prefsynth.config import load_params
from prefsynth.ids import content_id
from prefsynth.transforms.prompt_records import SPLITS, assign_split


def test_validation_is_carved_from_train_and_test_does_not_move():
    ids = [content_id("arith", str(i)) for i in range(4000)]
    before = {i: assign_split(i, 1234, 0.2) for i in ids}
    after = {i: assign_split(i, 1234, 0.2, 0.1) for i in ids}
    assert set(before.values()) == {"train", "test"} and set(after.values()) == set(SPLITS)
    # the same test prompts; validation prompts were train prompts before
    assert {i for i, s in before.items() if s == "test"} == {i for i, s in after.items() if s == "test"}
    assert all(before[i] == "train" for i, s in after.items() if s == "validation")
    share = sum(s == "validation" for s in after.values()) / len(ids)
    assert 0.08 < share < 0.12, share
    # stable: the same id, seed and fractions give the same split; another seed moves it
    assert after == {i: assign_split(i, 1234, 0.2, 0.1) for i in ids}
    assert after != {i: assign_split(i, 99, 0.2, 0.1) for i in ids}


def test_default_params_have_a_validation_split():
    p = load_params(None)
    assert p.prompts.validation_fraction == 0.1
    assert p.evaluate.split == "test" and p.evaluate.validation_split == "validation"
