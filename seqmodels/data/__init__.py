"""Data: one module per modality (series, images, tabular, tokens), looked up through
registry.py; shared splits, scaling, file readers, Arrow tables and Pandera schemas."""
