"""Pure functions: source content -> Markdown -> chunks -> vectors. No I/O beyond loading the model."""
