"""Real runtimes that execute models: onnxruntime and TensorFlow Lite Micro."""
