"""`make bench`: the pipeline's cost measured against the embedding model's own throughput (issue #7)."""
