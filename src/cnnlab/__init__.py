"""cnnlab: convolutional neural networks made real, verifiable and fast."""

__version__ = "0.1.0"
