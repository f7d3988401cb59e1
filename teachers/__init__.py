"""VLM and LLM teachers: the prompt (``prompt``), the API client (``client``), the answer parser (``parse``).
Importable without torch."""
