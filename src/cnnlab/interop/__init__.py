"""Interop: Keras import and ONNX export."""
