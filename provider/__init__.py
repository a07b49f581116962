"""keyferry: a Secrets Store CSI Driver provider for AWS, Google Cloud, Azure and local files."""

__version__ = "0.1.0"
