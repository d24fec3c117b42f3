"""Datasets: JSONL uploads validated line by line against task specs, stored by digest."""
