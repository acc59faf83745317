"""Ray edges: distributed training (Ray Train) and batch inference (Ray Data)."""
