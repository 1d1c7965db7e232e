"""Seeing inside trained networks: evaluation, feature maps (the layer walk), shift
robustness, receptive fields, the NumPy engine check on a run, baselines."""
