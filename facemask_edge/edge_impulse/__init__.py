"""Edge Impulse: upload the data set, profile and deploy the int8 model (bring your own model).

- :mod:`.config` - key and endpoints (``--api-key``/``EI_API_KEY``, ``EI_API_ENDPOINT``,
  ``EI_INGESTION_ENDPOINT``), the project the key belongs to, SDK settings.
- :mod:`.upload` - resumable, exactly-once upload through the ingestion API.
- :mod:`.ledger` - the local record of what is already uploaded.
- :mod:`.model` - ``ei.model.profile`` / ``ei.model.deploy`` of a run's ``model_int8.tflite``.
- :mod:`.redact` - the API key never reaches output, logs, errors or files.

Importing this package does not import the ``edgeimpulse`` SDK (it imports TensorFlow); only
profiling and deploying do.
"""
