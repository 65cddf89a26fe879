"""The gallery and serving: searching and growing a gallery (`gallery`) and the
exported forms, SavedModel, ONNX and TensorFlow Lite (`exported`).
"""
