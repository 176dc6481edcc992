"""The table of OpenAI checkpoints and assets."""

from __future__ import annotations

import re

import pytest

from engine_builder.catalog import model_names, resolve_model
from engine_builder.errors import UnknownModelError

ALL_SIZES = ["tiny", "base", "small", "medium"]


@pytest.mark.parametrize("name", model_names())
def test_checkpoint_url_carries_its_sha256(name: str) -> None:
    checkpoint = resolve_model(name).checkpoint
    match = re.fullmatch(
        r"https://openaipublic\.azureedge\.net/main/whisper/models/([0-9a-f]{64})/(.+\.pt)",
        checkpoint.url,
    )
    assert match is not None, checkpoint.url
    assert (match[1], match[2]) == (checkpoint.sha256, checkpoint.name)


def test_every_published_name_is_present() -> None:
    expected = {
        *ALL_SIZES,
        *(f"{size}.en" for size in ALL_SIZES),
        "large-v1", "large-v2", "large-v3", "large-v3-turbo", "large", "turbo",
    }  # fmt: skip
    assert set(model_names()) == expected


def test_aliases_resolve_to_the_newest_large_models() -> None:
    assert resolve_model("large") == resolve_model("large-v3")
    assert resolve_model("turbo") == resolve_model("large-v3-turbo")


def test_english_only_models_use_the_gpt2_vocabulary() -> None:
    assert resolve_model("base.en").tokenizer.name == "gpt2.tiktoken"
    assert resolve_model("base").tokenizer.name == "multilingual.tiktoken"
    assert resolve_model("tiny").mel_filters.name == "mel_filters.npz"


def test_assets_come_from_a_pinned_openai_whisper_tag() -> None:
    for remote in resolve_model("tiny").files[1:]:
        assert re.fullmatch(
            r"https://raw\.githubusercontent\.com/openai/whisper/v\d{8}/whisper/assets/"
            + re.escape(remote.name),
            remote.url,
        )
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="large-v3-turbo"):
        resolve_model("huge")
