"""Model export (PyTorch -> ONNX), FP16 conversion, INT8 QDQ quantization and the artifact cache."""
