"""After training: voting over runs and expert heads (``voting``), re-ranking rules (``rerank``), members as
groups of fold files with weights and offsets fitted out-of-fold and scored cross-fitted (``oof``) and checked
submission files (``submission``)."""
