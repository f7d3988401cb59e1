"""Public corpora: their releases converted into the project's label tables, split lists and feature folders."""
