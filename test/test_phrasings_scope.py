"""The phrasing bank (families, held out by rule) and the out-of-scope refusal built on it."""
import numpy as np
import pytest

from nanovla_ros import phrasings
from nanovla_ros.configuration import ConfigError
from nanovla_ros.graph import SHIPPED_SCOPE
from nanovla_ros.language.encoders import encoder_id
from nanovla_ros.language.scope import ScopeModel, colours_fit, unknown_destination
from nanovla_ros.language.text import normalise_instruction
from nanovla_ros.tasks import KINDS, all_instructions


def test_every_task_has_30_families_a_third_or_more_held_out_by_rule():
    for kind in KINDS:
        families = phrasings.families(kind)
        held = [f for f in families if f.split == "heldout"]
        assert len(families) >= 30 and 0.3 <= len(held) / len(families) <= 0.45, (kind, len(families), len(held))
        assert len({f.id for f in families}) == len(families)


def test_held_out_nouns_and_families_never_appear_in_training_sentences():
    train = phrasings.bank("train")
    held_nouns = set(phrasings.CUBE_NOUNS[1] + phrasings.SQUARE_NOUNS[1])
    assert not any(set(text.split()) & held_nouns for text, *_ in train)
    held_ids = {f.id for f in phrasings.families() if f.split == "heldout"}
    assert not {row[4] for row in train} & held_ids
    assert phrasings.bank("train") == train  # deterministic
    heldout = phrasings.bank("heldout")
    assert any(set(text.split()) & held_nouns for text, *_ in heldout)
    assert not {t for t, *_ in train} & {t for t, *_ in heldout}


def test_out_of_scope_sets_are_apart():
    assert not set(phrasings.OUT_OF_SCOPE_CALIBRATION) & set(phrasings.OUT_OF_SCOPE_HELDOUT)
    assert len(phrasings.OUT_OF_SCOPE_HELDOUT) >= 30


def test_grounding_rules():
    words = "put the red cube in the fridge".split()
    assert unknown_destination(words) == "in the fridge"
    assert unknown_destination("i need you to stack the red cube on the blue block".split()) is None
    assert colours_fit("put the red cube in the yellow square".split(), "pick_place")
    assert not colours_fit("put the red cube in the yellow square".split(), "touch")
    assert colours_fit("stack red on blue".split(), "stack")


def test_a_scope_file_must_be_one():
    with pytest.raises(ConfigError, match="cannot read the scope file"):
        ScopeModel.load("/nonexistent/scope.safetensors")


@pytest.fixture(scope="module")
def scope_and_vectors(minilm):
    model = ScopeModel.load(SHIPPED_SCOPE)

    def check(texts):
        texts = [normalise_instruction(t) for t in texts]
        vectors = minilm.encode(texts)
        return [model.check(t, v) for t, v in zip(texts, vectors, strict=True)]

    return model, check


def test_the_packaged_scope_file_refuses_out_of_scope_and_accepts_held_out_families(scope_and_vectors):
    """Measured on what calibration never used: the held-out out-of-scope requests and a sample of held-out-family
    sentences (`nanovla fit-scope` measures all of them); the workcell's own instructions are all in scope."""
    model, check = scope_and_vectors
    assert model.encoder_id == encoder_id("small")
    refused = [not d.in_scope for d in check(phrasings.OUT_OF_SCOPE_HELDOUT)]
    assert np.mean(refused) >= 0.95, [t for t, r in zip(phrasings.OUT_OF_SCOPE_HELDOUT, refused, strict=True) if not r]
    rng = np.random.default_rng(0)
    heldout = [row[0] for row in phrasings.bank("heldout")]
    sample = [heldout[i] for i in rng.choice(len(heldout), 300, replace=False)]
    decisions = check(sample)
    assert np.mean([not d.in_scope for d in decisions]) <= 0.02
    assert all(d.in_scope for d in check(all_instructions()))


def test_a_refusal_says_why(scope_and_vectors):
    _, check = scope_and_vectors
    coffee, fridge, colourless = check(["make me a coffee", "put the red cube in the fridge",
                                        "put the cube in the yellow square"])
    assert not coffee.in_scope and "names none of them" in coffee.reason
    assert not fridge.in_scope and "'in the fridge' is not in this workcell" in fridge.reason
    assert not colourless.in_scope and "say which cube" in colourless.reason
