"""Edge Impulse: upload the data set, profile and deploy the int8 model (bring your own model).

- :mod:`.config` - key and endpoints (``--api-key``/``EI_API_KEY``, ``EI_API_ENDPOINT``,
  ``EI_INGESTION_ENDPOINT``), the project the key belongs to, SDK settings.
- :mod:`.upload` - resumable, exactly-once upload through the ingestion API.
- :mod:`.ledger` - the local record of what is already uploaded.
- :mod:`.studio` - the studio API: one session (proxies, same-origin redirects), one deadline,
  every job's outcome checked.
- :mod:`.model` - profile / deploy a run's ``model_int8.tflite`` into an impulse chosen so that
  a user's own impulse is never replaced unasked.
- :mod:`.status` - ``ei status [--repair]``: the project's samples against the data set.
- :mod:`.redact` - the API key never reaches output, logs, errors or files.

Nothing here imports the ``edgeimpulse`` SDK (it imports TensorFlow); its source is the
reference the requests follow, and :func:`.config.sdk_settings` makes SDK calls safe for
scripts that use it.
"""
