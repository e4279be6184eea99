"""Adapters to torchsde and torchdiffeq: flattening, time reversal and counting live here."""
