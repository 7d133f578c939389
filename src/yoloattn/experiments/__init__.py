"""Experiments: ablation studies built from ordinary training and evaluation runs."""
