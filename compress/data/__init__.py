"""Datasets: the synthetic generator and COCO annotation validation."""
