"""The tfds builders behind ``mmfuse.data``; each module imports tensorflow_datasets.

``mmfuse.data`` imports these modules on first use only, so that ``import mmfuse``
stays free of tensorflow_datasets. Use them directly as tfds builders, e.g.
``synthetic.Synthetic(config="xor", data_dir=..., file_format="array_record")``.
"""
