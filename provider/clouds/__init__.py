"""One package per cloud (``local``, ``aws``, ``gcp``, ``azure``), each with the same
modules: ``ref``, ``dialect``, ``backend`` (see :mod:`provider.registry`)."""
