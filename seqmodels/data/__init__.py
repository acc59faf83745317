"""Data: sources -> canonical tables -> Pandera checks -> prepared windows."""
