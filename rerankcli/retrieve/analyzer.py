"""Text analysis for BM25 that follows Lucene's EnglishAnalyzer, so scores line up with pyserini.

Lucene (and pyserini's default index) applies: StandardTokenizer (Unicode word boundaries),
EnglishPossessiveFilter (drops a trailing 's), LowerCaseFilter, StopFilter with Lucene's 33
English stop words, PorterStemFilter. The tokenizer here is a regular expression for the
Unicode word-boundary rules that matter in English text: letters joined across an apostrophe,
a period or a colon ("U.S.A", "don't"), digits joined across a period or comma ("3.14",
"1,000"), hyphens splitting ("covid-19" -> "covid", "19"). The stemmer is Snowball's
"porter" (the original Porter algorithm, as Lucene's PorterStemFilter).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: org.apache.lucene.analysis.en.EnglishAnalyzer.ENGLISH_STOP_WORDS_SET
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

TOKEN = re.compile(
    r"\w+(?:(?:(?<=[^\W\d_])['’.:](?=[^\W\d_])|(?<=\d)[.,](?=\d))\w+)*"
)


class AnalyzerConfig(BaseModel):
    """How documents and queries become terms. Defaults mirror Lucene's English analyzer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowercase: bool = Field(True, description="lower-case every token")
    possessive: bool = Field(True, description="drop a trailing 's from words (Lucene's possessive filter)")
    stopwords: Literal["lucene", "none"] | list[str] = Field("lucene", description=(
        "words left out: lucene (its 33 English stop words), none, or a list of words"))
    stemmer: str = Field("porter", description="a Snowball stemmer (porter, english, ...) or none")

    @field_validator("stemmer")
    @classmethod
    def _known_stemmer(cls, value: str) -> str:
        if value == "none":
            return value
        import Stemmer

        if value not in Stemmer.algorithms():
            raise ValueError(f"unknown stemmer {value!r}; known: none, {', '.join(Stemmer.algorithms())}")
        return value


class Analyzer:
    """Turns text into BM25 terms; stems each distinct word once (memoised)."""

    def __init__(self, config: AnalyzerConfig) -> None:
        self.config = config
        if config.stopwords == "lucene":
            self.stopwords = LUCENE_STOPWORDS
        elif config.stopwords == "none":
            self.stopwords = frozenset()
        else:
            self.stopwords = frozenset(w.lower() if config.lowercase else w for w in config.stopwords)
        self._stem_cache: dict[str, str] = {}
        self._stemmer = None
        if config.stemmer != "none":
            import Stemmer

            self._stemmer = Stemmer.Stemmer(config.stemmer)

    def words(self, text: str) -> list[str]:
        """Tokens after possessive removal, lower-casing and stop words, before stemming."""
        out = []
        for token in TOKEN.findall(text):
            if self.config.possessive and token[-2:] in ("'s", "'S", "’s", "’S"):
                token = token[:-2]
            if self.config.lowercase:
                token = token.lower()
            if token and token not in self.stopwords:
                out.append(token)
        return out

    def __call__(self, text: str) -> list[str]:
        words = self.words(text)
        if self._stemmer is None:
            return words
        cache = self._stem_cache
        new = [w for w in set(words) if w not in cache]
        if new:
            cache.update(zip(new, self._stemmer.stemWords(new)))
        return [cache[w] for w in words]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(text) for text in texts]
