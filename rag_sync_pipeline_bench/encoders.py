"""Figure 1 (the model's own throughput on the pipeline's chunks) and the ONNX backends against it."""

from __future__ import annotations

import random
import resource
import time

import numpy as np

from rag_sync_pipeline.settings import default_model_path
from rag_sync_pipeline.transform.embedding import Embedder, model_id_for
from rag_sync_pipeline_bench.corpus import sentence


def embedder(backend: str) -> Embedder:
    return Embedder(model_id_for(default_model_path(), backend), source=default_model_path(), backend=backend)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def throughput(model: Embedder, texts: list[str]) -> tuple[float, np.ndarray, float]:
    """Chunks per second of `encode` on `texts` (after a warm-up batch), the vectors, and the CPU seconds
    the encoding cost (comparable with a sync's CPU time when other work shares the machine)."""
    model.encode(texts[:16])
    started, cpu = time.perf_counter(), cpu_seconds()
    vectors = model.encode(texts)
    return len(texts) / (time.perf_counter() - started), vectors, cpu_seconds() - cpu


def queries(count: int = 50, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"how does {sentence(rng).rstrip('.').lower()}" for _ in range(count)]


def top_k(corpus: np.ndarray, query_vectors: np.ndarray, k: int = 10) -> list[set[int]]:
    scores = query_vectors @ corpus.T
    return [set(np.argsort(-row)[:k]) for row in scores]


def compare_onnx(texts: list[str], sample_size: int, seed: int = 11) -> dict:
    """Throughput of torch fp32, ONNX fp32 and ONNX int8 on one sample of the chunks; agreement with fp32."""
    sample = random.Random(seed).sample(texts, min(sample_size, len(texts)))
    asked = queries()
    figures: dict = {"sample_chunks": len(sample)}
    vectors, query_vectors = {}, {}
    for backend in ("torch", "onnx", "onnx-int8"):
        model = embedder(backend)
        started = time.perf_counter()
        model.loaded()
        figures[f"{backend}_load_s"] = round(time.perf_counter() - started, 2)  # includes a first export
        rate, vectors[backend], _ = throughput(model, sample)
        figures[f"{backend}_chunks_per_s"] = round(rate, 1)
        query_vectors[backend] = model.encode(asked)
    reference = top_k(vectors["torch"], query_vectors["torch"])
    for backend in ("onnx", "onnx-int8"):
        cosine = (vectors[backend] * vectors["torch"]).sum(axis=1)
        figures[f"{backend}_speedup"] = round(figures[f"{backend}_chunks_per_s"] / figures["torch_chunks_per_s"], 2)
        figures[f"{backend}_cosine_mean"] = round(float(cosine.mean()), 4)
        figures[f"{backend}_cosine_min"] = round(float(cosine.min()), 4)
        found = top_k(vectors[backend], query_vectors[backend])
        figures[f"{backend}_top10_overlap"] = round(float(np.mean([len(a & b) / 10 for a, b in
                                                                    zip(reference, found, strict=True)])), 3)
    return figures
