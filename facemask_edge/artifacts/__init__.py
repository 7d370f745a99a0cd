"""The run folder's artifacts: the files each stage writes and the next one reads (``artifacts.run``),
the ``.tflite`` model (``artifacts.tflite``) and the small file helpers (``artifacts.files``).

Kept light on purpose: importing this package (or its modules) must not import TensorFlow, so
that every command can check its inputs before paying for a TensorFlow start-up.
"""
