"""Keep a RAG knowledge base in LanceDB in sync with where an organisation's content lives."""

__version__ = "0.1.0"
