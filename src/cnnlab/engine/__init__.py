"""Compute engines: the fast PyTorch engine, its C++ kernels, inference, the NumPy engine."""
