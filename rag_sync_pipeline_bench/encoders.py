"""Figure 1 (the model's own throughput on the pipeline's chunks) and the ONNX backends against it.

Every backend is measured in a fresh process of its own (`python -m rag_sync_pipeline_bench.encoders`): in one
process, torch's OpenMP threads keep spinning after its last batch and slow down whatever ONNX Runtime runs
next (ONNX fp32 measured 0.67x torch that way, the same speed as torch in a process of its own).

Agreement with fp32 is measured on two corpora, each with queries that are a sentence of one of its chunks
(what a user half-remembers) and, for the pipeline's chunks, generated questions too:
- the pipeline's own chunks of the generated space;
- real prose: CPython's language reference (`pydoc_data`, shipped with Python), chunked by the pipeline's
  chunker. The generated pages draw every sentence from one small vocabulary, so the scores of their 10th and
  11th best chunks differ by about 0.002, less than int8's own error: their overlap measures near-ties more
  than retrieval quality. Real prose is the figure the target is judged on; both are reported.
"""

from __future__ import annotations

import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rag_sync_pipeline_bench.corpus import sentence

BACKENDS = ("torch", "onnx", "onnx-int8")  # each as the pipeline runs it (its Embedder, its batch size)
SENTENCE_TRANSFORMERS_DEFAULTS = "sentence-transformers-defaults"
PROSE_QUERIES = 300


def queries(count: int = 50, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"how does {sentence(rng).rstrip('.').lower()}" for _ in range(count)]


def known_item_queries(texts: list[str], count: int = 50, seed: int = 13) -> list[str]:
    """A sentence of each of `count` random chunks (markup stripped), as a user quotes what they remember."""
    rng = random.Random(seed)
    asked = []
    for text in rng.sample(texts, min(count, len(texts))):
        plain = re.sub(r"[#|`*>\[\]_-]+", " ", text)
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", plain) if len(s.split()) >= 6]
        asked.append((rng.choice(sentences) if sentences else " ".join(plain.split()))[:300])
    return asked


def prose_chunks(limit: int) -> list[str]:
    """CPython's language reference, chunked as the pipeline chunks Markdown."""
    import pydoc_data.topics

    from rag_sync_pipeline.settings import default_model_path
    from rag_sync_pipeline.transform.chunking import MarkdownChunker
    from rag_sync_pipeline.transform.embedding import load_embedder

    embedder = load_embedder(default_model_path())
    chunker = MarkdownChunker(embedder.tokenizer, embedder.max_seq_length)
    texts = [c.text for _, body in sorted(pydoc_data.topics.topics.items()) for c in chunker.chunk(body)]
    return random.Random(17).sample(texts, min(limit, len(texts)))


# -- one backend in a process of its own ---------------------------------------------------------------------

def measure(backend: str, texts: list[str], extra: dict[str, list[str]] | None = None) -> dict:
    """Throughput of `backend` on `texts` (after a warm-up batch) in a fresh process, its CPU seconds, its
    load time, and the vectors of `texts` (named "texts") and of each named list in `extra`."""
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as folder:
        request, answer = Path(folder) / "request.json", Path(folder) / "answer.npz"
        request.write_text(json.dumps({"texts": texts, "extra": extra or {}}))
        result = subprocess.run([sys.executable, "-m", "rag_sync_pipeline_bench.encoders", backend, str(request),
                                 str(answer)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"encoding with {backend} failed: {result.stderr[-3000:]}")
        with np.load(answer) as arrays:
            vectors = {name: arrays[name] for name in arrays.files}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "vectors": vectors}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


class _SentenceTransformerDefaults:
    """Figure 1 as the issue defines it: `SentenceTransformer.encode` called as a user calls it, with its own
    defaults (batch size 32), not with the pipeline's settings."""

    def __init__(self, source: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(source, device="cpu")

    def loaded(self):
        return self.model

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, normalize_embeddings=True)


def _encode_here(backend: str, request: Path, answer: Path) -> None:
    from rag_sync_pipeline.settings import default_model_path
    from rag_sync_pipeline.transform.embedding import Embedder, model_id_for

    asked = json.loads(request.read_text())
    texts = asked["texts"]
    started = time.perf_counter()
    if backend == SENTENCE_TRANSFORMERS_DEFAULTS:
        model = _SentenceTransformerDefaults(default_model_path())
    else:
        model = Embedder(model_id_for(default_model_path(), backend), source=default_model_path(), backend=backend)
    model.loaded()
    load_s = time.perf_counter() - started  # includes a first ONNX export
    model.encode(texts[:16])
    started, cpu = time.perf_counter(), _cpu_seconds()
    vectors = model.encode(texts)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    extra = {name: model.encode(items) for name, items in asked["extra"].items()}
    np.savez(answer, texts=vectors, **extra)
    print(json.dumps({"chunks": len(texts), "chunks_per_s": round(len(texts) / wall, 2), "cpu_s": round(cpu, 1),
                      "load_s": round(load_s, 2)}))


# -- agreement ------------------------------------------------------------------------------------------------

def top_k(corpus: np.ndarray, query_vectors: np.ndarray, k: int = 10) -> list[set[int]]:
    scores = query_vectors @ corpus.T
    return [set(np.argsort(-row)[:k]) for row in scores]


def overlap(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean share of the reference's top-10 chunks that `other` also ranks in its top 10."""
    found = zip(top_k(*reference), top_k(*other), strict=True)
    return round(float(np.mean([len(a & b) / 10 for a, b in found])), 3)


def compare_onnx(texts: list[str], sample_size: int, seed: int = 11) -> dict:
    """Throughput of torch fp32, ONNX fp32 and ONNX int8 on one sample of the chunks; agreement with fp32."""
    sample = random.Random(seed).sample(texts, min(sample_size, len(texts)))
    prose = prose_chunks(sample_size)
    # 300 queries on prose: with 50, the overlap moved by about +-0.02 from one query sample to another.
    query_sets = {"questions": queries(), "sample_items": known_item_queries(sample), "prose": prose,
                  "prose_items": known_item_queries(prose, PROSE_QUERIES)}
    figures: dict = {"sample_chunks": len(sample), "prose_chunks": len(prose)}
    runs = {backend: measure(backend, sample, query_sets) for backend in BACKENDS}
    for backend, run in runs.items():
        figures[f"{backend}_chunks_per_s"] = run["chunks_per_s"]
        figures[f"{backend}_load_s"] = run["load_s"]
    reference = runs["torch"]["vectors"]
    for backend in BACKENDS[1:]:
        run = runs[backend]["vectors"]
        cosine = np.concatenate([(run[name] * reference[name]).sum(axis=1) for name in ("texts", "prose")])
        figures[f"{backend}_speedup"] = round(runs[backend]["chunks_per_s"] / runs["torch"]["chunks_per_s"], 2)
        figures[f"{backend}_cosine_mean"] = round(float(cosine.mean()), 4)
        figures[f"{backend}_cosine_min"] = round(float(cosine.min()), 4)
        for corpus, asked in (("texts", "questions"), ("texts", "sample_items"), ("prose", "prose_items")):
            figures[f"{backend}_top10_overlap_{asked}"] = overlap((reference[corpus], reference[asked]),
                                                                  (run[corpus], run[asked]))
    return figures


if __name__ == "__main__":
    _encode_here(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
