"""Seeing inside trained networks: evaluation, feature maps, shift robustness, receptive fields, baselines."""
