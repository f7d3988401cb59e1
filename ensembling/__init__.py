"""After training: voting over runs and expert heads (``voting``), re-ranking rules (``rerank``) and checked
submission files (``submission``)."""
