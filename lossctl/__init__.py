"""lossctl: how wrong are a model's outputs? Loss evaluation over files."""

__version__ = "0.1.0"
