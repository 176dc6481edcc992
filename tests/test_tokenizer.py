"""The tokenizer over both backends: CT2 model dirs' tokenizer.json and OpenAI's tiktoken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperwire.server.domain import Task
from whisperwire.server.errors import (
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedLanguageError,
)
from whisperwire.server.tokenizer import WhisperTokenizer

# Ids of the multilingual vocabulary with 99 languages. openai/whisper's `get_encoding`
# (https://github.com/openai/whisper/blob/main/whisper/tokenizer.py) appends the special tokens
# after the 50257 BPE ranks of multilingual.tiktoken, in this order: <|endoftext|>,
# <|startoftranscript|>, one per language (en, zh, de, ...), <|translate|>, <|transcribe|>,
# <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>, then the timestamps.
MULTILINGUAL_99 = {
    "eot": 50257,
    "sot": 50258,
    "translate": 50358,
    "transcribe": 50359,
    "sot_lm": 50360,
    "sot_prev": 50361,
    "no_speech": 50362,
    "no_timestamps": 50363,
    "timestamp_begin": 50364,
}
# large-v3 adds <|yue|> after the 99th language: everything from translate on moves by one.
MULTILINGUAL_100 = {
    name: token + (1 if token >= MULTILINGUAL_99["translate"] else 0)
    for name, token in MULTILINGUAL_99.items()
}
# English-only (gpt2) vocabularies are one BPE token shorter: everything moves down by one.
ENGLISH_ONLY = {name: token - 1 for name, token in MULTILINGUAL_99.items()}

TEXTS = [
    " And so my fellow Americans, ask not what your country can do for you.",
    " 大学生利用漏洞免费吃肯德基获刑",
    " Ünïcödé, emoji 🎙️ and  double  spaces\nnew line",
    " <|en|> is plain text here",
]


def special_ids(tokenizer: WhisperTokenizer) -> dict[str, int]:
    return {name: getattr(tokenizer, name) for name in MULTILINGUAL_99}


@pytest.fixture(scope="module")
def tiny_en(tiny_en_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(tiny_en_dir)


@pytest.fixture(scope="module")
def base(base_model_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(base_model_dir)


@pytest.fixture(scope="module")
def tiktoken_multilingual(whisper_assets_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(whisper_assets_dir, multilingual=True)


@pytest.fixture(scope="module")
def tiktoken_english(whisper_assets_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(whisper_assets_dir, multilingual=False)


@pytest.fixture(scope="module")
def tiktoken_100(whisper_assets_dir: Path) -> WhisperTokenizer:
    return WhisperTokenizer.from_dir(whisper_assets_dir, multilingual=True, num_languages=100)


@pytest.fixture(params=["base", "tiktoken_multilingual"])
def multilingual(request: pytest.FixtureRequest) -> WhisperTokenizer:
    tokenizer: WhisperTokenizer = request.getfixturevalue(request.param)
    return tokenizer


@pytest.fixture(params=["tiny_en", "tiktoken_english"])
def english_only(request: pytest.FixtureRequest) -> WhisperTokenizer:
    tokenizer: WhisperTokenizer = request.getfixturevalue(request.param)
    return tokenizer


@pytest.fixture(params=["base", "tiktoken_multilingual", "tiny_en", "tiktoken_english"])
def any_tokenizer(request: pytest.FixtureRequest) -> WhisperTokenizer:
    tokenizer: WhisperTokenizer = request.getfixturevalue(request.param)
    return tokenizer


def large_v3_style_tokenizer_json(base_dir: Path, destination: Path) -> Path:
    """base's tokenizer.json with <|yue|> inserted after the 99th language, as in large-v3."""
    spec: dict[str, Any] = json.loads((base_dir / "tokenizer.json").read_text())
    translate = MULTILINGUAL_99["translate"]
    for token in spec["added_tokens"]:
        token["id"] += 1 if token["id"] >= translate else 0
    yue = {**spec["added_tokens"][2], "id": translate, "content": "<|yue|>"}
    spec["added_tokens"].append(yue)
    spec["added_tokens"].sort(key=lambda token: token["id"])
    spec["post_processor"]["special_tokens"]["<|notimestamps|>"]["ids"] = [translate + 6]
    destination.mkdir()
    (destination / "tokenizer.json").write_text(json.dumps(spec))
    return destination


# --- special tokens ---------------------------------------------------------------------------


def test_multilingual_ids_match_openai_layout(multilingual: WhisperTokenizer) -> None:
    assert special_ids(multilingual) == MULTILINGUAL_99
    assert multilingual.multilingual and multilingual.num_languages == 99
    assert multilingual.language_token("en") == 50259
    assert multilingual.language_token("zh") == 50260
    assert multilingual.languages[:3] == ("en", "zh", "de")
    assert multilingual.languages[-1] == "su"


def test_language_tokens_match_the_ct2_config(base_model_dir: Path, base: WhisperTokenizer) -> None:
    config = json.loads((base_model_dir / "config.json").read_text())

    assert list(base.language_token_ids) == config["lang_ids"]


def test_100_language_vocabulary_from_tiktoken(tiktoken_100: WhisperTokenizer) -> None:
    assert special_ids(tiktoken_100) == MULTILINGUAL_100
    assert tiktoken_100.num_languages == 100
    assert tiktoken_100.languages[-1] == "yue"
    assert tiktoken_100.language_token("yue") == 50358


def test_100_language_vocabulary_detected_from_tokenizer_json(
    base_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = large_v3_style_tokenizer_json(base_model_dir, tmp_path / "large-v3")

    tokenizer = WhisperTokenizer.from_dir(model_dir, num_languages=100)

    assert special_ids(tokenizer) == MULTILINGUAL_100
    assert tokenizer.language_code(50358) == "yue"


def test_english_only_ids_are_shifted_down_by_one(english_only: WhisperTokenizer) -> None:
    assert special_ids(english_only) == ENGLISH_ONLY
    assert not english_only.multilingual
    assert english_only.languages == ("en",)
    assert english_only.num_languages == 99  # the tokens exist; the model never used them


# --- prompts ----------------------------------------------------------------------------------


def test_multilingual_prompts(multilingual: WhisperTokenizer) -> None:
    # "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>": the prompt openai/whisper's
    # decoder starts English transcription from (and TensorRT-LLM's Whisper example's default).
    plain = multilingual.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
    translate = multilingual.prompt(language="zh-CN", task=Task.TRANSLATE, timestamps=True)

    assert plain == [50258, 50259, 50359, 50363]
    assert translate == [50258, 50260, 50358]


def test_english_only_prompts_carry_no_language_or_task(english_only: WhisperTokenizer) -> None:
    assert english_only.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False) == [
        50257,
        50362,
    ]
    assert english_only.prompt(language=None, task=Task.TRANSCRIBE, timestamps=True) == [50257]


def test_previous_text_keeps_the_last_223_tokens(any_tokenizer: WhisperTokenizer) -> None:
    previous = list(range(1000, 1300))

    prompt = any_tokenizer.prompt(
        language="en", task=Task.TRANSCRIBE, timestamps=True, previous_text_ids=previous
    )

    assert prompt[0] == any_tokenizer.sot_prev
    assert prompt[1:224] == previous[-223:]
    assert prompt[224] == any_tokenizer.sot


def test_english_only_models_cannot_translate(english_only: WhisperTokenizer) -> None:
    with pytest.raises(InvalidOptionError) as raised:
        english_only.prompt(language="en", task=Task.TRANSLATE, timestamps=False)
    assert raised.value.field == "task"


def test_english_only_models_reject_other_languages(english_only: WhisperTokenizer) -> None:
    with pytest.raises(UnsupportedLanguageError, match="'de'"):
        english_only.prompt(language="de", task=Task.TRANSCRIBE, timestamps=False)


def test_multilingual_prompt_needs_a_detected_language(multilingual: WhisperTokenizer) -> None:
    with pytest.raises(ValueError, match="detect"):
        multilingual.prompt(language=None, task=Task.TRANSCRIBE, timestamps=False)


# --- languages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_language", "code"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),
        ("en_GB", "en"),
        ("English", "en"),
        ("zh-Hant-TW", "zh"),
        ("mandarin", "zh"),
        ("haitian creole", "ht"),
        ("castilian", "es"),
        ("jv-ID", "jw"),
        ("nb-NO", "no"),
        ("iw", "he"),
        (" pt-BR ", "pt"),
    ],
)
def test_languages_accept_codes_tags_and_names(
    multilingual: WhisperTokenizer, given_language: str, code: str
) -> None:
    token = multilingual.language_token(given_language)

    assert multilingual.language_code(token) == code


@pytest.mark.parametrize("bad", ["klingon", "xx-YY", "", "yue"])
def test_unknown_languages_name_the_bad_value(multilingual: WhisperTokenizer, bad: str) -> None:
    with pytest.raises(UnsupportedLanguageError) as raised:
        multilingual.language_token(bad)
    assert raised.value.field == "language"
    assert repr(bad) in raised.value.message


def test_every_language_round_trips(tiktoken_100: WhisperTokenizer) -> None:
    codes = [tiktoken_100.language_code(t) for t in tiktoken_100.language_token_ids]

    assert tuple(codes) == tiktoken_100.languages
    assert len(set(tiktoken_100.language_token_ids)) == 100
    with pytest.raises(ValueError, match="not a language token"):
        tiktoken_100.language_code(tiktoken_100.eot)


# --- text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_text_round_trips_and_decodes_alike_on_both_backends(
    text: str,
    base: WhisperTokenizer,
    tiktoken_multilingual: WhisperTokenizer,
    tiny_en: WhisperTokenizer,
    tiktoken_english: WhisperTokenizer,
) -> None:
    for from_json, from_tiktoken in ((base, tiktoken_multilingual), (tiny_en, tiktoken_english)):
        for ids in (from_json.encode(text), from_tiktoken.encode(text)):
            assert all(token < from_json.eot for token in ids)  # "<|en|>" in text stays text
            assert from_json.decode(ids) == from_tiktoken.decode(ids) == text


def test_english_only_backends_encode_alike(
    tiny_en: WhisperTokenizer, tiktoken_english: WhisperTokenizer
) -> None:
    for text in TEXTS:
        assert tiny_en.encode(text) == tiktoken_english.encode(text)


def test_multilingual_merges_differ_between_libraries_but_decode_alike(
    base: WhisperTokenizer, tiktoken_multilingual: WhisperTokenizer
) -> None:
    # tokenizers applies the merge list in order, tiktoken merges by rank: a few words of
    # the multilingual vocabulary split differently. Both spell the same text.
    from_json, from_tiktoken = base.encode(" text"), tiktoken_multilingual.encode(" text")

    assert from_json != from_tiktoken
    assert base.decode(from_json) == base.decode(from_tiktoken) == " text"


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_any_text_round_trips_on_every_backend(
    text: str,
    base: WhisperTokenizer,
    tiktoken_multilingual: WhisperTokenizer,
    tiny_en: WhisperTokenizer,
    tiktoken_english: WhisperTokenizer,
) -> None:
    for tokenizer in (base, tiktoken_multilingual, tiny_en, tiktoken_english):
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tiny_en.encode(text) == tiktoken_english.encode(text)


def test_decode_drops_special_and_timestamp_tokens(any_tokenizer: WhisperTokenizer) -> None:
    words = any_tokenizer.encode(" ask not")
    ids = [any_tokenizer.sot, any_tokenizer.timestamp_begin, *words, any_tokenizer.eot]

    assert any_tokenizer.decode(ids) == " ask not"


def test_split_timestamped_pairs_and_open_ends(any_tokenizer: WhisperTokenizer) -> None:
    tok = any_tokenizer
    first, second = tok.encode(" And so"), tok.encode(" my fellow")

    def at(seconds: float) -> int:
        return tok.timestamp_begin + round(seconds / 0.02)

    paired = [at(0), *first, at(2.5), at(2.5), *second, at(5.0), tok.eot]
    single_boundary = [at(0), *first, at(2.5), *second, at(5.0)]
    trailing_unpaired = [at(0), *first, at(2.5), at(2.5)]
    open_end = [at(1.0), *first, at(2.5), *second]

    expected = [(0.0, 2.5, first), (2.5, 5.0, second)]
    assert tok.split_timestamped(paired) == expected
    assert tok.split_timestamped(single_boundary) == expected
    assert tok.split_timestamped(trailing_unpaired) == [(0.0, 2.5, first)]
    assert tok.split_timestamped(open_end, window_seconds=7.5) == [
        (1.0, 2.5, first),
        (2.5, 7.5, second),
    ]
    assert tok.split_timestamped([*first, tok.eot]) == [(0.0, 30.0, first)]
    assert tok.split_timestamped([at(0), *first, at(30.0)]) == [(0.0, 30.0, first)]


@pytest.mark.parametrize("fixture", ["tiny_en", "base"])
def test_non_speech_tokens_match_the_ct2_suppress_list(
    fixture: str, request: pytest.FixtureRequest, tiny_en_dir: Path, base_model_dir: Path
) -> None:
    tokenizer: WhisperTokenizer = request.getfixturevalue(fixture)
    model_dir = tiny_en_dir if fixture == "tiny_en" else base_model_dir
    config = json.loads((model_dir / "config.json").read_text())
    # The converter's list adds Whisper's control tokens to the symbol set.
    symbols = sorted(token for token in config["suppress_ids"] if token < tokenizer.eot)

    assert list(tokenizer.non_speech_tokens()) == symbols


def test_non_speech_tokens_agree_across_backends(
    base: WhisperTokenizer,
    tiktoken_multilingual: WhisperTokenizer,
    tiny_en: WhisperTokenizer,
    tiktoken_english: WhisperTokenizer,
) -> None:
    assert base.non_speech_tokens() == tiktoken_multilingual.non_speech_tokens()
    assert tiny_en.non_speech_tokens() == tiktoken_english.non_speech_tokens()


# --- loading ----------------------------------------------------------------------------------


def test_engine_dir_with_assets_subfolder_uses_tiktoken(
    whisper_assets_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "assets").mkdir()
    shutil.copy(whisper_assets_dir / "multilingual.tiktoken", tmp_path / "assets")

    tokenizer = WhisperTokenizer.from_dir(tmp_path, num_languages=99)

    assert special_ids(tokenizer) == MULTILINGUAL_99


def test_both_tiktoken_files_need_a_choice(whisper_assets_dir: Path) -> None:
    with pytest.raises(ValueError, match="multilingual="):
        WhisperTokenizer.from_dir(whisper_assets_dir)


def test_a_directory_without_a_vocabulary_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"tokenizer\.json"):
        WhisperTokenizer.from_dir(tmp_path)


def test_engine_config_mismatches_are_reported(base_model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="99 language tokens but the model expects 100"):
        WhisperTokenizer.from_dir(base_model_dir, num_languages=100)
    with pytest.raises(ModelNotFoundError, match="multilingual"):
        WhisperTokenizer.from_dir(base_model_dir, multilingual=False)
