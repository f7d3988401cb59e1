"""Pseudo labels: the selection strategies (``strategies``) and the two-stage and ACL-MER drivers (``drivers``)."""
