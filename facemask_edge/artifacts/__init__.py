"""What the pipeline leaves behind and reads back: the ``.tflite`` model (``artifacts.tflite``).

Kept light on purpose: importing this package (or its modules) must not import TensorFlow, so
that every command can check its inputs before paying for a TensorFlow start-up.
"""
