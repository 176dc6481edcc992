"""Whisper's tokenizer: prompts, special tokens, text and timestamp tokens.

The byte-pair encoding itself is a well-kept library's: Hugging Face `tokenizers` for the
`tokenizer.json` of CTranslate2 model directories, `tiktoken` for the `*.tiktoken` files that
TensorRT-LLM engine directories carry (Whisper's special tokens are then added the way
OpenAI's tokenizer defines them).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

import tiktoken
import tokenizers

from whisperwire.server.domain import Task
from whisperwire.server.errors import (
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedLanguageError,
)

# Whisper's languages in token order; 99-language models stop before "yue" (large-v3 adds it).
_LANGUAGE_NAMES: Final = (
    ("en", "english"), ("zh", "chinese"), ("de", "german"), ("es", "spanish"),
    ("ru", "russian"), ("ko", "korean"), ("fr", "french"), ("ja", "japanese"),
    ("pt", "portuguese"), ("tr", "turkish"), ("pl", "polish"), ("ca", "catalan"),
    ("nl", "dutch"), ("ar", "arabic"), ("sv", "swedish"), ("it", "italian"),
    ("id", "indonesian"), ("hi", "hindi"), ("fi", "finnish"), ("vi", "vietnamese"),
    ("he", "hebrew"), ("uk", "ukrainian"), ("el", "greek"), ("ms", "malay"), ("cs", "czech"),
    ("ro", "romanian"), ("da", "danish"), ("hu", "hungarian"), ("ta", "tamil"),
    ("no", "norwegian"), ("th", "thai"), ("ur", "urdu"), ("hr", "croatian"),
    ("bg", "bulgarian"), ("lt", "lithuanian"), ("la", "latin"), ("mi", "maori"),
    ("ml", "malayalam"), ("cy", "welsh"), ("sk", "slovak"), ("te", "telugu"),
    ("fa", "persian"), ("lv", "latvian"), ("bn", "bengali"), ("sr", "serbian"),
    ("az", "azerbaijani"), ("sl", "slovenian"), ("kn", "kannada"), ("et", "estonian"),
    ("mk", "macedonian"), ("br", "breton"), ("eu", "basque"), ("is", "icelandic"),
    ("hy", "armenian"), ("ne", "nepali"), ("mn", "mongolian"), ("bs", "bosnian"),
    ("kk", "kazakh"), ("sq", "albanian"), ("sw", "swahili"), ("gl", "galician"),
    ("mr", "marathi"), ("pa", "punjabi"), ("si", "sinhala"), ("km", "khmer"), ("sn", "shona"),
    ("yo", "yoruba"), ("so", "somali"), ("af", "afrikaans"), ("oc", "occitan"),
    ("ka", "georgian"), ("be", "belarusian"), ("tg", "tajik"), ("sd", "sindhi"),
    ("gu", "gujarati"), ("am", "amharic"), ("yi", "yiddish"), ("lo", "lao"), ("uz", "uzbek"),
    ("fo", "faroese"), ("ht", "haitian creole"), ("ps", "pashto"), ("tk", "turkmen"),
    ("nn", "nynorsk"), ("mt", "maltese"), ("sa", "sanskrit"), ("lb", "luxembourgish"),
    ("my", "myanmar"), ("bo", "tibetan"), ("tl", "tagalog"), ("mg", "malagasy"),
    ("as", "assamese"), ("tt", "tatar"), ("haw", "hawaiian"), ("ln", "lingala"),
    ("ha", "hausa"), ("ba", "bashkir"), ("jw", "javanese"), ("su", "sundanese"),
    ("yue", "cantonese"),
)  # fmt: skip
# Other names Whisper accepts, and standard codes that differ from Whisper's own.
_LANGUAGE_ALIASES: Final = {
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht",
    "letzeburgesch": "lb", "pushto": "ps", "panjabi": "pa", "moldavian": "ro",
    "moldovan": "ro", "sinhalese": "si", "castilian": "es", "mandarin": "zh",
    "jv": "jw",  # ISO 639-1 Javanese; Whisper kept the withdrawn "jw"
    "iw": "he",  # withdrawn code for Hebrew, still in some converted vocabularies
    "nb": "no",  # Norwegian Bokmål, the usual BCP-47 tag for Norwegian
}  # fmt: skip
_CODE_BY_NAME: Final = {name: code for code, name in _LANGUAGE_NAMES} | _LANGUAGE_ALIASES
_KNOWN_CODES: Final = frozenset(code for code, _ in _LANGUAGE_NAMES)
_NAME_BY_CODE: Final = dict(_LANGUAGE_NAMES)


def language_name(code: str) -> str:
    """Whisper's English name of a language code ("en" -> "english"); unknown codes as given."""
    return _NAME_BY_CODE.get(code, code)


N_TIMESTAMPS: Final = 1501  # <|0.00|> ... <|30.00|>
SECONDS_PER_TIMESTAMP: Final = 0.02
# Half the 448-token text context, less one for <|startofprev|> (as OpenAI truncates).
MAX_PREVIOUS_TOKENS: Final = 223
# OpenAI's test for a multilingual vocabulary (the English-only one is one token shorter).
_MULTILINGUAL_MIN_VOCAB: Final = 51865
_DEFAULT_NUM_LANGUAGES: Final = 99

# GPT-2's pre-tokenisation pattern, which both Whisper vocabularies use.
_GPT2_PATTERN: Final = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
# Symbols Whisper suppresses with suppress_tokens=-1: speaker tags, music notes, brackets.
_NON_SPEECH_SYMBOLS: Final = (
    *'"#()*+/:;<=>@[\\]^_`{|}~「」『』',
    "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("',
    "((", "))", "(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪",
)  # fmt: skip
# U+2640..U+267F symbols share their first UTF-8 bytes, so suppressing the first token of
# a multi-token encoding is safe for them (and only for them).
_MUSIC_SYMBOLS: Final = "♩♪♫♬♭♮♯"


class BpeVocabulary(Protocol):
    """The byte-pair encoding under a WhisperTokenizer."""

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings in the text stay plain text."""
        ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_id(self, token: str) -> int | None:
        """The id of a special token such as "<|en|>", or None if the vocabulary lacks it."""
        ...

    def token_text(self, token_id: int) -> str:
        """The text of a special token, such as "<|en|>"."""
        ...


class _HuggingFaceBpe:
    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        # Encode "<|en|>" typed in a prompt as text, never as a control token.
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def token_text(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(token_id) or ""


class _TiktokenBpe:
    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(list(ids))

    def token_id(self, token: str) -> int | None:
        if token not in self._encoding.special_tokens_set:
            return None
        return self._encoding.encode_single_token(token)

    def token_text(self, token_id: int) -> str:
        return self._encoding.decode_single_token_bytes(token_id).decode("utf-8", "replace")


class WhisperTokenizer:
    """Special tokens, languages and prompts of one Whisper vocabulary."""

    def __init__(self, vocabulary: BpeVocabulary, *, num_languages: int | None = None) -> None:
        """`num_languages` (from the engine config) is cross-checked against the vocabulary."""
        self._vocabulary = vocabulary
        self.eot: Final = self._special("<|endoftext|>")
        self.sot: Final = self._special("<|startoftranscript|>")
        self.translate: Final = self._special("<|translate|>")
        self.transcribe: Final = self._special("<|transcribe|>")
        self.sot_lm: Final = self._special("<|startoflm|>")
        self.sot_prev: Final = self._special("<|startofprev|>")
        # Hugging Face's conversions call <|nospeech|> by its older name.
        self.no_speech: Final = self._special("<|nospeech|>", "<|nocaptions|>")
        self.no_timestamps: Final = self._special("<|notimestamps|>")
        # Timestamps follow <|notimestamps|> (tokenizer.json files often omit them).
        self.timestamp_begin: Final = self.no_timestamps + 1
        self.n_vocab: Final = self.timestamp_begin + N_TIMESTAMPS
        self.multilingual: Final = self.n_vocab >= _MULTILINGUAL_MIN_VOCAB
        self._language_tokens = self._find_language_tokens()
        self._language_by_token = {token: code for code, token in self._language_tokens.items()}
        _check_language_count(len(self._language_tokens), num_languages)
        self._non_speech: tuple[int, ...] | None = None

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_dir(
        cls, path: Path, *, multilingual: bool | None = None, num_languages: int | None = None
    ) -> WhisperTokenizer:
        """Load from a model directory (or its `assets/`): tokenizer.json, else *.tiktoken.

        `multilingual` picks between multilingual.tiktoken and gpt2.tiktoken when both are
        present; with num_languages it is checked against the vocabulary.
        """
        folders = [path, path / "assets"]
        json_files = [folder / "tokenizer.json" for folder in folders]
        if found := next((file for file in json_files if file.is_file()), None):
            tokenizer = cls.from_tokenizer_json(found, num_languages=num_languages)
        else:
            tiktoken_file = _pick_tiktoken_file(folders, multilingual)
            tokenizer = cls.from_tiktoken_file(
                tiktoken_file, num_languages=num_languages or _DEFAULT_NUM_LANGUAGES
            )
        if multilingual is not None and multilingual != tokenizer.multilingual:
            kind = "multilingual" if tokenizer.multilingual else "English-only"
            raise ModelNotFoundError(f"the tokenizer in {path} is {kind}, unlike its model")
        return tokenizer

    @classmethod
    def from_tokenizer_json(
        cls, path: Path, *, num_languages: int | None = None
    ) -> WhisperTokenizer:
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # the library raises a bare Exception for bad files
            raise ModelNotFoundError(f"cannot load tokenizer {path}: {error}") from error
        return cls(_HuggingFaceBpe(tokenizer), num_languages=num_languages)

    @classmethod
    def from_tiktoken_file(
        cls, path: Path, *, num_languages: int = _DEFAULT_NUM_LANGUAGES
    ) -> WhisperTokenizer:
        """OpenAI's `multilingual.tiktoken` or `gpt2.tiktoken` (English-only) BPE ranks."""
        if not 1 <= num_languages <= len(_LANGUAGE_NAMES):
            raise ValueError(f"num_languages must be 1..{len(_LANGUAGE_NAMES)}")
        ranks = _read_tiktoken_ranks(path)
        encoding = tiktoken.Encoding(
            name=path.stem,
            pat_str=_GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens=_whisper_special_tokens(len(ranks), num_languages),
        )
        return cls(_TiktokenBpe(encoding), num_languages=num_languages)

    def _special(self, *names: str) -> int:
        for name in names:
            if (token := self._vocabulary.token_id(name)) is not None:
                return token
        raise ModelNotFoundError(f"not a Whisper vocabulary: it has no {names[0]} token")

    def _find_language_tokens(self) -> dict[str, int]:
        """Language tokens sit between <|startoftranscript|> and <|translate|>, in order."""
        tokens: dict[str, int] = {}
        for token in range(self.sot + 1, self.translate):
            code = self._vocabulary.token_text(token).removeprefix("<|").removesuffix("|>")
            code = _LANGUAGE_ALIASES.get(code, code)
            if code not in _KNOWN_CODES:
                raise ModelNotFoundError(f"not a Whisper vocabulary: token {token} is {code!r}")
            tokens[code] = token
        return tokens

    # --- languages --------------------------------------------------------------------------

    @property
    def num_languages(self) -> int:
        """Language tokens in the vocabulary (English-only vocabularies have them too)."""
        return len(self._language_tokens)

    @property
    def languages(self) -> tuple[str, ...]:
        """Codes a caller may ask for, in token order; English-only models know only "en"."""
        return tuple(self._language_tokens) if self.multilingual else ("en",)

    def normalize_language(self, language: str) -> str:
        """Whisper's code for a code, a BCP-47 tag ("en-US") or a name ("english")."""
        key = language.strip().lower().replace("_", "-")
        code = _CODE_BY_NAME.get(key) or key.split("-")[0]
        code = _LANGUAGE_ALIASES.get(code, code)
        if code not in self.languages:
            raise UnsupportedLanguageError(
                f"unsupported language {language!r}: this model knows {', '.join(self.languages)}",
                field="language",
            )
        return code

    def language_token(self, language: str) -> int:
        return self._language_tokens[self.normalize_language(language)]

    def language_code(self, token_id: int) -> str:
        if token_id not in self._language_by_token:
            raise ValueError(f"token {token_id} is not a language token")
        return self._language_by_token[token_id]

    @property
    def language_token_ids(self) -> tuple[int, ...]:
        """Tokens of `languages`, in the same order (for language detection)."""
        return tuple(self._language_tokens[code] for code in self.languages)

    # --- prompts ----------------------------------------------------------------------------

    def prompt(
        self,
        *,
        language: str | None,
        task: Task,
        timestamps: bool,
        previous_text_ids: Sequence[int] = (),
    ) -> list[int]:
        """Decoder prompt: [<|startofprev|> previous...] <|startoftranscript|> <|lang|> <|task|>
        [<|notimestamps|>]. English-only models take no language or task token.
        """
        tokens: list[int] = []
        if previous_text_ids:
            tokens += [self.sot_prev, *previous_text_ids[-MAX_PREVIOUS_TOKENS:]]
        tokens += self._sot_sequence(language, task)
        if not timestamps:
            tokens.append(self.no_timestamps)
        return tokens

    def sot_sequence(self, language: str | None, task: Task) -> list[int]:
        """<|startoftranscript|> [<|lang|> <|task|>]: what word alignment starts from."""
        return self._sot_sequence(language, task)

    def _sot_sequence(self, language: str | None, task: Task) -> list[int]:
        if not self.multilingual:
            if task is Task.TRANSLATE:
                raise InvalidOptionError(
                    "an English-only model cannot translate; use a multilingual model",
                    field="task",
                )
            if language is not None:
                self.normalize_language(language)  # only English passes
            return [self.sot]
        if language is None:
            raise ValueError("a multilingual prompt needs a language: detect it first")
        task_token = self.translate if task is Task.TRANSLATE else self.transcribe
        return [self.sot, self.language_token(language), task_token]

    # --- text -------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Text tokens only (for an initial prompt, pass " " + prompt.strip() as OpenAI does)."""
        return self._vocabulary.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the text tokens; special and timestamp tokens are dropped."""
        return self._vocabulary.decode([token for token in ids if token < self.eot])

    def is_timestamp(self, token: int) -> bool:
        return self.timestamp_begin <= token < self.n_vocab

    def timestamp_seconds(self, token: int) -> float:
        return round((token - self.timestamp_begin) * SECONDS_PER_TIMESTAMP, 2)

    def split_timestamped(
        self, ids: Sequence[int], *, window_seconds: float = 30.0
    ) -> list[tuple[float, float, list[int]]]:
        """(start, end, text tokens) segments, seconds relative to the window.

        Timestamp tokens open and close segments; text before any timestamp starts at 0, and
        text the model left open ends at `window_seconds`. Other special tokens are dropped.
        """
        segments: list[tuple[float, float, list[int]]] = []
        start = 0.0
        text: list[int] = []
        for token in ids:
            if self.is_timestamp(token):
                time = self.timestamp_seconds(token)
                if text:
                    segments.append((start, time, text))
                    text = []
                start = time
            elif token < self.eot:
                text.append(token)
        if text:
            segments.append((start, window_seconds, text))
        return segments

    def non_speech_tokens(self) -> tuple[int, ...]:
        """Whisper's suppress_tokens=-1 set: symbol tokens for speaker tags, music, brackets.

        Hyphens and apostrophes are suppressed only at the start of a word.
        """
        if self._non_speech is None:
            self._non_speech = self._find_non_speech_tokens()
        return self._non_speech

    def _find_non_speech_tokens(self) -> tuple[int, ...]:
        suppressed = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in (*_NON_SPEECH_SYMBOLS, *_MUSIC_SYMBOLS):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in _MUSIC_SYMBOLS:
                    suppressed.add(tokens[0])
        return tuple(sorted(suppressed))


def _check_language_count(found: int, expected: int | None) -> None:
    if expected is not None and found != expected:
        raise ModelNotFoundError(
            f"the tokenizer has {found} language tokens but the model expects {expected}"
        )


def _pick_tiktoken_file(folders: Sequence[Path], multilingual: bool | None) -> Path:
    names = {True: ["multilingual"], False: ["gpt2"], None: ["multilingual", "gpt2"]}
    candidates = [folder / f"{name}.tiktoken" for name in names[multilingual] for folder in folders]
    existing = [file for file in candidates if file.is_file()]
    if not existing:
        tried = ", ".join(str(file) for file in candidates)
        raise ModelNotFoundError(f"no tokenizer.json or tiktoken vocabulary: tried {tried}")
    if multilingual is None and {file.stem for file in existing} == {"multilingual", "gpt2"}:
        raise ValueError(f"{existing[0].parent} has both vocabularies: pass multilingual=")
    return existing[0]


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse "<base64 token> <rank>" lines (tiktoken's own loader caches local files by path)."""
    try:
        lines = path.read_bytes().splitlines()
        return {base64.b64decode(token): int(rank) for token, rank in map(bytes.split, lines)}
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot read tiktoken vocabulary {path}: {error}") from error


def _whisper_special_tokens(first_id: int, num_languages: int) -> dict[str, int]:
    """Whisper's special tokens after the BPE ranks, in OpenAI's order."""
    languages = [f"<|{code}|>" for code, _ in _LANGUAGE_NAMES[:num_languages]]
    timestamps = [f"<|{i * SECONDS_PER_TIMESTAMP:.2f}|>" for i in range(N_TIMESTAMPS)]
    names = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *languages,
        *["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>"],
        *["<|nospeech|>", "<|notimestamps|>"],
        *timestamps,
    ]
    return {name: first_id + offset for offset, name in enumerate(names)}
