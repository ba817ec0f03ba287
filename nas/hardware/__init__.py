"""Hardware costs that are measured: latency on a device or runtime, latency profiles, FLOP counting, ONNX export."""
