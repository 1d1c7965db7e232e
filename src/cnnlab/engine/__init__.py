"""Compute engines: the fast PyTorch engine and its C++ kernels, inference, devices, the NumPy engine."""
