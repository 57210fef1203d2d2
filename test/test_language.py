"""Instruction validation, the embedding cache, the frozen encoders and the service core."""
import threading

import numpy as np
import pytest

from nanovla_ros.configuration import ConfigError
from nanovla_ros.language.cache import EmbeddingCache
from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.language.encoders import ENCODER_SPECS, encoder_id, gemma_cache_dir
from nanovla_ros.language.service import BackboneNotReady, BackboneState, InstructionEncoderService
from nanovla_ros.language.text import InstructionError, normalise_instruction, validate_instruction


# ---------------------------------------------------------------- text
def test_normalisation_collapses_whitespace_and_case():
    assert normalise_instruction("  Put the RED cube\t in\nthe square ") == "put the red cube in the square"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   \t\n", "empty"),
    ("x" * 300, "300 characters"),
    (b"put the \xff cube", "not valid UTF-8"),
    ("put the \udcff cube", "not valid UTF-8"),
    ("put the\x00 cube", "control character"),
    ("put the \ufffd cube", "U\\+FFFD"),  # how invalid UTF-8 arrives in a ROS string
])
def test_bad_instructions_are_rejected_with_a_reason(text, message):
    with pytest.raises(InstructionError, match=message):
        validate_instruction(text, max_chars=256)


def test_a_text_cut_at_a_nul_is_refused_by_its_declared_length():
    sent = "touch the red cube\x00 and then sweep everything off the table"
    arrived = sent.split("\x00")[0]  # what a ROS string delivers
    with pytest.raises(InstructionError, match="cut short"):
        validate_instruction(arrived, 256, sent_bytes=len(sent.encode()))
    assert validate_instruction(arrived, 256, sent_bytes=len(arrived.encode())) == "touch the red cube"
    assert validate_instruction(arrived, 256) == "touch the red cube"  # a caller that declares no length


def test_invisible_format_characters_and_compatibility_forms_do_not_make_new_instructions():
    plain = normalise_instruction("touch the red cube")
    for disguised in ("touch the\u200b red cube", "touch the re\u200dd cube", "\u202etouch the red cube\u202c",
                      "touch the red\u00ad cube", "ｔｏｕｃｈ the red cube", "\ufefftouch the red cube"):
        assert validate_instruction(disguised, 256) == plain, repr(disguised)
    with pytest.raises(InstructionError, match="empty"):
        validate_instruction("\u200b\u200b", 256)


def test_the_disk_cache_is_bounded_and_evicts_the_least_recently_used(tmp_path):
    path = tmp_path / "cache.sqlite3"
    cache = EmbeddingCache(path, max_memory_entries=1, max_disk_entries=3)
    for i in range(3):
        cache.put("enc", f"text {i}", np.full(4, i, np.float32))
    cache.clear_memory()
    assert cache.get("enc", "text 0") is not None  # read from disk: now the most recently used
    cache.put("enc", "text 3", np.full(4, 3, np.float32))
    assert len(cache) == 3
    cache.clear_memory()
    assert cache.get("enc", "text 1") is None and cache.get("enc", "text 0") is not None
    cache.close()
    reopened = EmbeddingCache(path, max_memory_entries=1, max_disk_entries=2)  # a smaller bound applies at once
    assert len(reopened) == 2
    for i in range(50):
        reopened.put("enc", f"flood {i}", np.zeros(4, np.float32))
    assert len(reopened) == 2 and path.stat().st_size < 200_000
    reopened.close()


def test_valid_utf8_bytes_and_unicode_are_accepted():
    assert validate_instruction("mets le cube rouge à gauche".encode(), 256) == "mets le cube rouge à gauche"


# ---------------------------------------------------------------- cache
def test_cache_memory_lru_evicts_oldest():
    cache = EmbeddingCache(None, max_memory_entries=2)
    for i in range(3):
        cache.put("enc", f"t{i}", np.full(4, i, np.float32))
    assert cache.get("enc", "t0") is None
    np.testing.assert_array_equal(cache.get("enc", "t2"), np.full(4, 2, np.float32))


def test_cache_survives_restart_and_separates_encoders(tmp_path):
    path = tmp_path / "e.sqlite3"
    cache = EmbeddingCache(path)
    cache.put("small", "hello", np.arange(3, dtype=np.float32))
    cache.close()
    reopened = EmbeddingCache(path)
    np.testing.assert_array_equal(reopened.get("small", "hello"), [0, 1, 2])
    assert reopened.get("large", "hello") is None
    reopened.clear_memory()
    np.testing.assert_array_equal(reopened.get("small", "hello"), [0, 1, 2])  # from disk
    assert len(reopened) == 1


# ---------------------------------------------------------------- real encoders
def test_minilm_embeddings_are_unit_norm_and_meaningful(minilm):
    vectors = minilm.encode(["put the red cube in the yellow square",
                             "place the red block into the yellow square",
                             "what is the capital of france"])
    assert vectors.shape == (3, ENCODER_SPECS["small"].dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3
    np.testing.assert_allclose(minilm.encode(["put the red cube in the yellow square"])[0], vectors[0], atol=1e-5)
    assert minilm.encoder_id == encoder_id("small")


def test_minilm_vectors_are_its_first_and_last_layers_means_side_by_side(minilm):
    """The small backbone's pooling (docs/language.md): each half is one layer's mean over the real tokens, unit
    length before the whole is; the last layer's half is sentence-transformers' own all-MiniLM-L6-v2 vector."""
    import torch

    texts = ["stack the red cube on the blue cube", "touch the green one"]  # padded in the batch
    tokens = minilm.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.model(**tokens, output_hidden_states=True).hidden_states
    mask = tokens["attention_mask"][..., None].float()
    halves = [(h * mask).sum(1) / mask.sum(1) for h in (hidden[1], hidden[-1])]
    expected = torch.cat([torch.nn.functional.normalize(h, dim=-1) for h in halves], dim=-1) / np.sqrt(2.0)
    np.testing.assert_allclose(minilm.encode(texts), expected.numpy(), atol=1e-5)
    swapped = minilm.encode(["stack the blue cube on the red cube"])[0]
    assert float(swapped @ minilm.encode(texts[:1])[0]) < 0.999  # word order still changes the vector


@pytest.mark.skipif(not (gemma_cache_dir() / "model.safetensors").is_file(),
                    reason="Gemma cache missing: run `make setup` (scripts/setup_env.sh converts it once)")
def test_gemma_embeddings_have_width_640_and_padding_does_not_matter():
    from nanovla_ros.language.encoders import load_gemma

    gemma = load_gemma()
    short, long = "touch the blue cube", "push the green cube to the left of the table"
    batch = gemma.encode([short, long])  # the short one is padded in the batch
    alone = gemma.encode([short])
    assert batch.shape == (2, 640)
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-4)
    assert abs(float(batch[0] @ batch[1])) < 0.999


# ---------------------------------------------------------------- service core
def _service(cache_dir, loader, backbones=("small",)):
    return InstructionEncoderService(EncoderConfig(backbones=backbones, cache_dir=str(cache_dir)), loader=loader)


def test_service_second_request_is_a_cache_hit(cache_dir, minilm):
    service = _service(cache_dir, lambda b: minilm)
    service.start()
    assert service.wait_loaded(30)
    first = service.encode("Put the red cube in the yellow square", "small")
    second = service.encode("put the red cube  in the yellow square", "small")
    assert not first.cache_hit and second.cache_hit
    np.testing.assert_array_equal(first.embedding, second.embedding)
    assert first.embedding.shape == (768,) and first.encoder_id == encoder_id("small")


def test_service_answers_while_loading_and_serves_cached_entries(cache_dir, minilm):
    release = threading.Event()

    def slow_loader(backbone):
        release.wait(30)
        return minilm

    service = _service(cache_dir, slow_loader)
    service.cache.put(encoder_id("small"), "touch the red cube", np.ones(768, np.float32))
    service.start()
    assert service.state("small") is BackboneState.LOADING
    with pytest.raises(BackboneNotReady, match="still loading"):
        service.encode("push the blue cube", "small")
    assert service.encode("Touch the red cube", "small").cache_hit  # served from cache while loading
    release.set()
    assert service.wait_loaded(30)
    assert service.encode("push the blue cube", "small").embedding.shape == (768,)


def test_service_reports_load_failures_and_unconfigured_backbones(cache_dir):
    def broken_loader(backbone):
        raise FileNotFoundError("weights missing")

    service = _service(cache_dir, broken_loader)
    service.start()
    service.wait_loaded(10)
    with pytest.raises(BackboneNotReady, match="failed to load: FileNotFoundError: weights missing"):
        service.encode("touch the red cube", "small")
    with pytest.raises(BackboneNotReady, match="not served here"):
        service.encode("touch the red cube", "large")
    with pytest.raises(InstructionError):
        service.encode("", "small")


@pytest.mark.parametrize("kwargs", [dict(backbones=()), dict(backbones=("medium",)), dict(backbones=("small", "small")),
                                    dict(max_instruction_chars=0), dict(memory_cache_entries=0)])
def test_encoder_config_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        EncoderConfig(**kwargs)
